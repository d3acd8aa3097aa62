/**
 * The local answer stage: answers the proxy writes without an origin (a hook's
 * reply to `onRequest`, `OPTIONS *`, `Max-Forwards: 0`). `onResponse` sees
 * them as it sees an origin's response, so each absolute-form exchange ends in
 * exactly one of `onResponse` or `onError`.
 *
 * @module
 */
import { writeAnswer } from "./answer.ts";
import { closeWriteQuietly, settleWithin } from "./conn.ts";
import type { ClientSide, ExchangeContext } from "./exchange_state.ts";
import type { RequestHead } from "./head.ts";
import { type Answer, HookResponse, isFinalStatus, isReasonPhrase, normalizeReply } from "./hook_messages.ts";
import { callHook } from "./hook_runner.ts";
import { HookError, isThenable } from "./hooks.ts";
import { type BodyReader, EMPTY_BODY } from "./reader.ts";
import { finishHookFields } from "./request_policy.ts";

/** How long the rest of a request body is drained after an early answer before closing. */
export const LINGER_MS = 1000;

const KEEP_IN_ANSWERS: ReadonlySet<string> = new Set(["proxy-authenticate"]);

/**
 * Writes an answer of the proxy's own. With `pending` (a request body not yet
 * read), the answer says `Connection: close`, the write side is closed at once,
 * and the rest of the body is drained for up to {@link LINGER_MS} so the close
 * does not become a reset that destroys the answer. Resolves to whether the
 * connection may carry another request.
 */
export async function answerLocally(
  ctx: ExchangeContext,
  client: ClientSide,
  head: RequestHead,
  answer: Answer,
  keepAlive: boolean,
  pending: BodyReader | null,
): Promise<boolean> {
  client.draft.kind = "local";
  const hooks = ctx.hooks;
  const hreq = client.hook?.req ?? null;
  if (hooks !== null && hooks.onResponse !== null && hreq !== null) {
    hreq.seal("The request was answered without an origin");
    answer = await answerHooks(ctx, client, head, answer);
  }
  const unread = pending !== null && !pending.done;
  const open = await writeAnswer(client, answer, {
    method: head.method,
    minor: head.minor,
    close: !keepAlive || unread || ctx.stopping,
    hook: "onRequest",
  });
  if (!unread) return open;
  await closeWriteQuietly(client.conn);
  await settleWithin(drain(pending), LINGER_MS);
  return false;
}

/** Runs onResponse on a local answer. */
async function answerHooks(
  ctx: ExchangeContext,
  client: ClientSide,
  head: RequestHead,
  answer: Answer,
): Promise<Answer> {
  const hres = new HookResponse(answer.status, answer.reason, answer.fields, EMPTY_BODY, head.method, answer.body);
  const onResponse = ctx.hooks!.onResponse!;
  const hreq = client.hook!.req!;
  const hctx = client.hook!.ctx;
  client.hook!.responded = true;
  const result = callHook(client, ctx, "onResponse", () => onResponse(hres, hreq, hctx));
  const reply = isThenable(result) ? await result : result;
  if (reply !== undefined && reply !== null) {
    const replaced = normalizeReply(reply);
    if (replaced === null) throw new HookError("onResponse", "invalid");
    return replaced;
  }
  const status = hres.status;
  if (!isFinalStatus(status) || !isReasonPhrase(hres.reason)) throw new HookError("onResponse", "invalid");
  const fields = hres.fieldsNeedCheck
    ? finishHookFields(hres.currentFields, "onResponse", KEEP_IN_ANSWERS)
    : hres.currentFields;
  const source = hres.bodyModified ? hres.body.source : answer.body;
  const body = source.kind === "wire" ? answer.body : source;
  return { status, reason: hres.reason, fields, body };
}

/** Reads a body to its end, dropping it; a failure just ends the drain. */
async function drain(body: BodyReader): Promise<void> {
  try {
    while (await body.next() !== null) {
      // Dropped: the answer is already written.
    }
  } catch {
    // The client closed or reset: nothing is left to drain.
  }
}
