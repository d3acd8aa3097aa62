/**
 * The error stage: the one place an error becomes the client's answer. The
 * user's `onError` may answer instead (a custom page); if it fails, the
 * proxy's own answer still goes out. After the final head is on the wire an
 * error can only close the connection (never a body made to look complete).
 *
 * @module
 */
import { writeAnswer } from "./answer.ts";
import { describe, ProxyAuthError, ProxyError, UpstreamError, UpstreamTimeoutError } from "./errors.ts";
import type { ClientSide, ExchangeContext } from "./exchange_state.ts";
import { normalizeReply } from "./hook_messages.ts";
import { callHook } from "./hook_runner.ts";
import { HookError, isThenable } from "./hooks.ts";
import { errorResponse } from "./respond.ts";
import { has } from "./fields.ts";
import { proxyStatusField } from "./proxy_status.ts";
import { writeAll } from "./writer.ts";

/** The client side of an exchange, with the request method (HEAD answers carry no body). */
export interface ErrorTarget extends ClientSide {
  /** The request's method ("" before a head was read). */
  method: string;
  /** The request's minor HTTP version (1 before a head was read). */
  minor: number;
}

/**
 * Answers `error` to the client if no final head was sent yet, and notes it in
 * the exchange record. Resolves to whether an answer was written (the close
 * should then linger).
 */
export async function answerError(ctx: ExchangeContext, s: ErrorTarget, error: unknown): Promise<boolean> {
  const logger = ctx.logger;
  if (!(error instanceof ProxyError)) {
    // Socket errors (reset, broken pipe) end the session without a response.
    if (isSocketError(error)) {
      s.draft.error ??= "client-gone";
      return false;
    }
    logger.log("error", "internal-error", { error: String(error) });
  } else if (error instanceof HookError) {
    logger.log("error", "hook-failed", { code: error.code, error: String(error.cause ?? error.message) });
  } else if (error instanceof UpstreamError || error instanceof UpstreamTimeoutError) {
    logger.log("info", "upstream-error", { code: error.code });
  } else {
    // The client's request was refused (400, 414, 431, 501, 505, ...): not the origin's doing.
    logger.log("debug", "request-refused", { code: error.code, status: error.status });
  }
  const failure = error instanceof ProxyError
    ? error
    : new ProxyError("Internal proxy error", { status: 500, code: "internal-error", cause: error });
  s.draft.error = failure.code;
  // An incomplete request (the client half-closed mid-head or mid-body) still gets its
  // 400 if the client is listening (RFC 9112 §8); a reset client makes the write fail.
  if (s.finalHeadSent) return false;
  // Each exchange ends in exactly one of onResponse or onError: a failing onResponse is answered by the proxy.
  if (failure instanceof ProxyAuthError && failure.delayMs > 0) {
    // Repeated failures from one address are slowed down (bounded), whoever writes the 407: guessing costs time.
    await new Promise((resolve) => setTimeout(resolve, failure.delayMs));
  }
  const hooks = ctx.hooks;
  const hook = s.hook;
  if (hooks !== null && hooks.onError !== null && hook !== null && !hook.responded) {
    if (await answerWithHook(ctx, s, failure)) return true;
  }
  s.draft.status = failure.status;
  s.draft.contentType = "text/plain; charset=utf-8"; // errorResponse's
  try {
    const o = ctx.options;
    const answer = errorResponse(failure, {
      head: s.method === "HEAD",
      proxyName: o.via,
      details: o.proxyStatusDetails,
    });
    await writeAll(s.out, answer);
    return true;
  } catch {
    // The client is gone; there is no one left to tell.
    return false;
  }
}

/** Lets onError answer an error; resolves to whether it did (else the proxy's own answer goes out). */
async function answerWithHook(ctx: ExchangeContext, s: ErrorTarget, error: ProxyError): Promise<boolean> {
  const hook = s.hook!;
  const onError = ctx.hooks!.onError!;
  try {
    const result = callHook(s, ctx, "onError", () => onError(error, hook.ctx, hook.req ?? undefined));
    const reply = isThenable(result) ? await result : result;
    if (reply === undefined || reply === null) return false;
    const answer = normalizeReply(reply);
    if (answer === null) throw new HookError("onError", "invalid");
    // A custom page is still the proxy's own answer: it says why, unless the hook said so itself.
    if (!has(answer.fields, "proxy-status")) {
      answer.fields.push(proxyStatusField(ctx.options.via, error, ctx.options.proxyStatusDetails));
    }
    // RFC 9110 §15.5.8: a 407 MUST carry the challenge; a custom page keeps it.
    if (error instanceof ProxyAuthError && answer.status === 407 && !has(answer.fields, "proxy-authenticate")) {
      answer.fields.push(["Proxy-Authenticate", error.challenge]);
    }
    await writeAnswer(s, answer, {
      method: s.method,
      minor: s.minor,
      close: true,
      hook: "onError",
    });
    return true;
  } catch (failure) {
    // A failing onError must not cost the client its answer: the proxy's own goes out.
    ctx.logger.log("error", "hook-failed", { code: describe(failure), error: String(failure) });
    return s.finalHeadSent;
  }
}

/** Whether an error is the socket's (reset, broken pipe, closed): no answer can be written. */
export function isSocketError(error: unknown): boolean {
  return error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.BadResource ||
    error instanceof Deno.errors.Interrupted ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.NotConnected;
}
