/**
 * One absolute-form exchange (RFC 9110 §7.6, RFC 9112), as stages in order:
 * request policy (built-in checks, then the user's `onRequest`), route
 * (destination → pooled or new connection), send (head, then the body
 * streaming while the response is awaited), response head (1xx, 101, the
 * user's `onResponse`), body relay, and settle (pool, pin or close). The
 * CONNECT and Upgrade relays are in connect.ts, local answers in local.ts.
 *
 * Without hooks, none of the hook stages allocate or await anything.
 *
 * @module
 */
import { coarseNow, deadlineIn } from "./clock.ts";
import { describe, PrematureEofError, ProxyError, UpstreamError, UpstreamTimeoutError } from "./errors.ts";
import {
  connectionTokens,
  dropField,
  endToEndTrailers,
  type Field,
  getAll,
  has,
  stripHopByHop,
  viaField,
} from "./fields.ts";
import { contentLength, type Framing, requestFraming, responseFraming } from "./framing.ts";
import { HeadParser, type RequestHead, type ResponseHead } from "./head.ts";
import {
  type Answer,
  HookRequest,
  HookResponse,
  isFinalStatus,
  isReasonPhrase,
  normalizeReply,
} from "./hook_messages.ts";
import { callHook, hookFailure } from "./hook_runner.ts";
import { HookError, isThenable, type Reply } from "./hooks.ts";
import { StreamBody } from "./message_view.ts";
import { type BodyReader, bodyReader, EMPTY_BODY, takeBufferedChunked } from "./reader.ts";
import {
  checkHostFields,
  checkLoop,
  finishHookFields,
  forwardFields,
  isPersistent,
  isValidDestination,
  maxForwardsAnswer,
  maxForwardsOf,
  optionsAnswer,
  targetVerdict,
} from "./request_policy.ts";
import { httpDate, SCRATCH_BYTES, serializeHead } from "./serialize.ts";
import { giveBuffer, takeBuffer } from "./buffers.ts";
import { closeQuietly, closeWriteQuietly, settleWithin, writeOrDrop } from "./conn.ts";
import { connectTunnel, KEEP_UPGRADE, switchProtocols } from "./connect.ts";
import type { ClientSide, ExchangeContext, ResetWatch } from "./exchange_state.ts";
import { answerLocally, LINGER_MS } from "./local.ts";
import { addFramingFields, ownFraming, pumpBody } from "./answer.ts";
import type { UpstreamConn } from "./upstream.ts";
import { type BodyWriter, ChunkedBodyWriter, encodeChunked, RawBodyWriter, writeAll } from "./writer.ts";

export type { ClientSide, ExchangeContext } from "./exchange_state.ts";
export { describe } from "./errors.ts";

function newResetWatch(): ResetWatch {
  const watch: ResetWatch = {
    upstream: null,
    gone: false,
    onError: () => {
      // A FIN is a legitimate half-close and never gets here; pipelined bytes stay buffered.
      if (watch.upstream === null) return;
      watch.gone = true;
      closeQuietly(watch.upstream);
    },
  };
  return watch;
}

const RETRY = Symbol("retry");
/** Bodies up to this size that are already buffered are written together with their head. */
const INLINE_BODY_BYTES = 16 * 1024;
const NO_BODY: Framing = Object.freeze({ kind: "none" });
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

/**
 * Handles one request whose head has been read. Resolves to whether the client
 * connection may carry another request.
 *
 * @throws {ProxyError} before the final response head is sent; the caller answers with it.
 */
export async function handleRequest(ctx: ExchangeContext, client: ClientSide, head: RequestHead): Promise<boolean> {
  // Stage: request policy, built-in checks.
  const fields = head.fields;
  checkHostFields(fields, head.minor);
  const framing = requestFraming(head);
  const tokens = connectionTokens(fields);
  const persistent = isPersistent(head.minor, tokens, ctx.stopping);
  const hasBody = framing.kind === "chunked" || (framing.kind === "length" && framing.length > 0);

  if (head.method === "CONNECT") return await connectTunnel(ctx, client, head);
  const verdict = targetVerdict(head);
  if (verdict.kind === "proxy") {
    // OPTIONS * addressed to the proxy itself (RFC 9110 §9.3.7): not an absolute-form request, no hooks.
    return await answerLocally(ctx, client, head, optionsAnswer(), persistent && !hasBody, null);
  }
  const dest = verdict.target;
  checkLoop(fields, ctx.options.via);
  const maxForwards = maxForwardsOf(head);
  // RFC 9110 §7.8: forward an upgrade offer (Connection: upgrade + Upgrade) from an
  // HTTP/1.1 client on a body-less request; otherwise Upgrade is hop-by-hop and dropped.
  const upgrade = head.minor === 1 && tokens.has("upgrade") && !hasBody && has(fields, "upgrade");
  const keep = upgrade ? KEEP_UPGRADE : undefined;
  let out = forwardFields(head, tokens, dest.authority, maxForwards, keep, viaField(ctx.options.via, head.minor));
  const hooks = ctx.hooks;
  let hreq: HookRequest | null = null;
  if (hooks !== null && client.hook !== null && (hooks.onRequest || hooks.onResponse || hooks.onError)) {
    const wire = () => bodyReader(client.reader, framing, ctx.chunkedLimits);
    hreq = client.hook.req = new HookRequest(head.method, head.target, dest, out, wire);
  }
  const builtin = maxForwardsAnswer(head, maxForwards);
  if (builtin !== null) return await answerLocally(ctx, client, head, builtin, persistent && !hasBody, null);

  // Stage: request policy, the user's onRequest.
  let hostname = dest.hostname;
  let port = dest.port;
  let path = dest.path;
  if (hreq !== null) {
    const onRequest = hooks!.onRequest;
    if (onRequest !== null) {
      const hctx = client.hook!.ctx;
      const request = hreq;
      const result = callHook(client, ctx, "onRequest", () => onRequest(request, hctx));
      const reply = isThenable(result) ? await result : result;
      if (reply !== undefined && reply !== null) {
        const answer = normalizeReply(reply);
        if (answer === null) throw new HookError("onRequest", "invalid");
        const wire = hreq.body.wire;
        return await answerLocally(ctx, client, head, answer, persistent, wire.done ? null : wire);
      }
      if (!isValidDestination(hreq.destination)) throw new HookError("onRequest", "invalid");
      ({ hostname, port } = hreq.destination);
      path = hreq.path;
    }
    if (hreq.fieldsNeedCheck) {
      out = finishHookFields(hreq.currentFields, "onRequest", keep);
      const hosts = getAll(out, "host").length;
      if (hosts > 1) throw new HookError("onRequest", "invalid");
      if (hosts === 0) out.unshift(["Host", dest.authority]);
    }
  }
  if (upgrade) out.push(["Connection", "Upgrade"]);

  // Stage: the request body's framing toward the origin.
  const send = hreq !== null && hreq.bodyModified
    ? hookBody(out, hreq, hasBody)
    : wireBody(ctx, client, out, framing, tokens);
  hreq?.seal("The request body has been forwarded already");
  // The head is built in a recycled buffer, kept until no retry can need it again.
  const scratch = takeBuffer(SCRATCH_BYTES);
  const requestHead = serializeHead(`${head.method} ${path} HTTP/1.1`, out, send.inline, scratch);
  // RFC 9110 §9.2.2: only idempotent requests are retried, and only when the whole request
  // (head and any body) is in `requestHead` and can be sent again.
  const retryable = IDEMPOTENT.has(head.method) && send.body.done && send.drain === null;
  const auth = hasConnectionAuth(getAll(fields, "authorization"));
  const key = `${hostname}:${port}`;
  const draft = client.draft;
  try {
    for (let attempt = 0;; attempt++) {
      // Stage: route. A connection pinned to this client (NTLM/Negotiate) serves its requests to that origin.
      const pinned = attempt === 0 && client.pinned !== null && client.pinned.key === key ? client.pinned : null;
      if (pinned !== null) {
        client.pinned = null;
        pinned.reused = true; // it may have gone stale while idle: the retry rules apply
      }
      let up = pinned ?? (attempt === 0 ? ctx.pool.take(key) : null);
      if (up === null) {
        const started = draft.timed ? performance.now() : 0;
        up = await ctx.pool.open(hostname, port);
        if (draft.timed) draft.connectMs = Math.round((performance.now() - started) * 100) / 100;
      }
      client.upstream = up.conn;
      draft.upstream = up.conn;
      draft.reused = up.reused;
      try {
        const plan: Plan = {
          req: head,
          persistent,
          requestHead,
          send,
          upgrade,
          canRetry: retryable && up.reused,
          pin: auth || pinned !== null,
          tokens,
          hreq,
        };
        const result = await exchange(ctx, client, up, plan);
        if (result !== RETRY) return result;
        ctx.logger.log("debug", "upstream-retry", { origin: up.key });
      } finally {
        client.upstream = null;
      }
    }
  } finally {
    giveBuffer(scratch); // every write of requestHead has settled by now
  }
}

/** How the request body goes to the origin. */
interface SendPlan {
  /** Body bytes written with the head, if any. */
  inline: Uint8Array | null;
  /** The rest of the body, streamed after the head. */
  body: BodyReader;
  /** Whether `body` is sent chunked (else as is: its length is in the head). */
  chunked: boolean;
  /** The client's original body when a hook replaced it unread: drained, never forwarded. */
  drain: BodyReader | null;
}

/**
 * The client's body as it arrives. A small body that has fully arrived goes out in
 * the same write as the head. A whole chunked body is validated before the origin is
 * contacted (a bad one gets 400 and the origin never sees the request) and, without
 * trailers, sent with a Content-Length.
 */
function wireBody(
  ctx: ExchangeContext,
  client: ClientSide,
  out: Field[],
  framing: Framing,
  tokens: ReadonlySet<string>,
): SendPlan {
  let inline: Uint8Array | null = null;
  let chunked = false;
  if (framing.kind === "length") {
    if (framing.length > 0 && framing.length <= INLINE_BODY_BYTES) inline = client.reader.take(framing.length);
    out.push(["Content-Length", String(framing.length)]);
  } else if (framing.kind === "chunked") {
    const whole = takeBufferedChunked(client.reader, INLINE_BODY_BYTES, ctx.chunkedLimits);
    if (whole !== null && whole.trailers.length === 0) {
      inline = whole.data;
      dropField(out, "trailer"); // no trailer section follows a Content-Length body
      out.push(["Content-Length", String(inline.length)]);
    } else {
      out.push(["Transfer-Encoding", "chunked"]);
      chunked = true;
      if (whole !== null) inline = encodeChunked(whole.data, endToEndTrailers(whole.trailers, tokens));
    }
  }
  // Without a chunked body to the origin there is no trailer section to announce.
  if (framing.kind !== "chunked") dropField(out, "trailer");
  const body = bodyReader(client.reader, inline !== null ? NO_BODY : framing, ctx.chunkedLimits);
  return { inline, body, chunked, drain: null };
}

/** A body a hook read, replaced or transformed: Content-Length when its length is known, else chunked. */
function hookBody(out: Field[], hreq: HookRequest, hadBody: boolean): SendPlan {
  const source = hreq.body.source;
  dropField(out, "trailer");
  const drain = hreq.body.orphan;
  if (source.kind === "bytes") {
    const data = source.data;
    if (data.length > 0 || hadBody) out.push(["Content-Length", String(data.length)]);
    return { inline: data.length > 0 ? data : null, body: EMPTY_BODY, chunked: false, drain };
  }
  out.push(["Transfer-Encoding", "chunked"]);
  const stream = source.kind === "stream" ? source.stream : new ReadableStream<Uint8Array>();
  const body = new StreamBody(stream, (error) => hookFailure("onRequest", error));
  return { inline: null, body, chunked: true, drain };
}

/** One attempt at sending a prepared request over one upstream connection. */
interface Plan {
  /** The client's request head. */
  req: RequestHead;
  /** Whether the client asked to keep its connection. */
  persistent: boolean;
  /** The serialized head for the origin. */
  requestHead: Uint8Array;
  /** The request body's plan. */
  send: SendPlan;
  /** Whether an upgrade was offered to the origin. */
  upgrade: boolean;
  /** Whether a failure before any response byte may be retried on a fresh connection. */
  canRetry: boolean;
  /** Whether the connection carries connection-oriented auth and stays with this client. */
  pin: boolean;
  /** The request's `Connection` tokens (lower-cased). */
  tokens: ReadonlySet<string>;
  /** The request as hooks saw it (null without hooks). */
  hreq: HookRequest | null;
}

/** The request body streaming to the origin while the response is awaited. */
interface Pump {
  /** Settles when the whole body (and any drained original) has been read; null when there was none. */
  promise: Promise<void> | null;
  /** Set when reading the client's body failed. */
  clientError: unknown;
  /** Set when the origin stopped reading. */
  upstreamWriteFailed: boolean;
  /** After an early answer: drain the client's body instead of forwarding it. */
  discard: boolean;
  /** Set once the response head is in: the pump must not start the response timer. */
  headSeen: boolean;
}

async function exchange(
  ctx: ExchangeContext,
  client: ClientSide,
  up: UpstreamConn,
  plan: Plan,
): Promise<boolean | typeof RETRY> {
  const { persistent, send, canRetry } = plan;
  try {
    await writeAll(up.conn, plan.requestHead);
  } catch (error) {
    closeQuietly(up.conn);
    if (canRetry) return RETRY;
    throw new UpstreamError("Cannot send the request to the origin", "upstream-write-failed", error);
  }

  // The response-head deadline is enforced by the server's sweeper (no timer per request):
  // on expiry it sets client.responseTimedOut and closes the upstream connection.
  client.responseTimedOut = false;
  const watch = client.resetWatch ??= newResetWatch();
  watch.gone = false;
  const startResponseTimer = () => {
    client.inBody = false;
    client.responseDeadline = deadlineIn(ctx.options.responseTimeoutMs, ctx.tickMs);
    // The request is out: start the client's next read now (it is needed for the next
    // request anyway) so a client that resets while we wait is noticed at once and the
    // origin request is abandoned. A FIN is a legitimate half-close and changes nothing;
    // pipelined bytes simply stay buffered. Not when the connection closes after this
    // response: no next request needs that read, and closing a connection with a read
    // pending makes Deno build an Interrupted error (a fifth of the cost of a
    // connection-per-request client); a reset then shows when the response is written.
    if (!persistent) return;
    watch.upstream = up.conn;
    client.reader.prefetch().catch(watch.onError);
  };
  client.inBody = true;
  client.activity = coarseNow();
  const pump: Pump = { promise: null, clientError: null, upstreamWriteFailed: false, discard: false, headSeen: false };
  if (send.body.done && send.drain === null) startResponseTimer();
  else pump.promise = pumpRequestBody(client, up, plan, pump, startResponseTimer);

  // Stage: response head (interim responses relayed, then the final head).
  let res: ResponseHead | typeof RETRY;
  try {
    res = await readFinalHead(ctx, client, up, plan, pump);
  } finally {
    pump.headSeen = true; // the pump must not start a timer from now on
    watch.upstream = null; // the exchange moved on: the connection may be pooled for others now
    client.responseDeadline = 0;
    client.inBody = true;
    client.activity = coarseNow();
  }
  if (res === RETRY) return RETRY;
  if (client.draft.timed) {
    client.draft.firstByteMs = Math.round((performance.now() - client.draft.startedAt) * 100) / 100;
  }
  if (res.status === 101) return await switchProtocols(ctx, client, res, up);
  return await respond(ctx, client, up, plan, pump, res);
}

/** Streams the request body (and drains a replaced original), then starts the response timer. */
async function pumpRequestBody(
  client: ClientSide,
  up: UpstreamConn,
  plan: Plan,
  pump: Pump,
  startResponseTimer: () => void,
): Promise<void> {
  const { body, drain } = plan.send;
  if (!body.done) {
    const writer: BodyWriter = plan.send.chunked ? new ChunkedBodyWriter(up.conn) : new RawBodyWriter(up.conn);
    while (true) {
      let data: Uint8Array | null;
      try {
        data = await body.next();
        client.activity = coarseNow();
      } catch (error) {
        // The request cannot be completed: abort the upstream side too.
        pump.clientError = error;
        closeQuietly(up.conn);
        return;
      }
      try {
        if (data === null) {
          await writer.end(endToEndTrailers(body.trailers, plan.tokens));
          break;
        }
        if (pump.discard) continue;
        await writer.write(data);
        client.activity = coarseNow();
      } catch {
        // The origin stopped reading (it may have answered early); its response decides.
        pump.upstreamWriteFailed = true;
        return;
      }
    }
  }
  // A hook replaced the client's body unread: it is read and dropped, so the connection stays in step.
  while (drain !== null) {
    try {
      if (await drain.next() === null) break;
      client.activity = coarseNow();
    } catch (error) {
      pump.clientError = error;
      closeQuietly(up.conn);
      return;
    }
  }
  if (!pump.headSeen) startResponseTimer();
}

/** Reads response heads until a final one (or a 101), relaying 1xx to HTTP/1.1 clients. */
async function readFinalHead(
  ctx: ExchangeContext,
  client: ClientSide,
  up: UpstreamConn,
  plan: Plan,
  pump: Pump,
): Promise<ResponseHead | typeof RETRY> {
  const watch = client.resetWatch!;
  /** Why the response read failed when it was our doing: the client side or the deadline. */
  const throwIfAbandoned = () => {
    if (pump.clientError !== null) throw pump.clientError;
    if (watch.gone) throw new PrematureEofError("The client reset the connection while waiting for the origin");
    if (client.responseTimedOut) {
      throw new UpstreamTimeoutError("Timed out waiting for the origin's response", "upstream-response-timeout");
    }
  };
  while (true) {
    const parser = new HeadParser("response", ctx.responseLimits);
    let got: boolean;
    try {
      got = await up.reader.readHead(parser);
    } catch (error) {
      closeQuietly(up.conn);
      throwIfAbandoned();
      if (error instanceof ProxyError && !(error instanceof PrematureEofError)) {
        throw new UpstreamError("The origin sent an invalid response head", "upstream-bad-response", error);
      }
      if (plan.canRetry && !parser.started) return RETRY;
      throw new UpstreamError(
        parser.started ? "The origin closed the connection mid-response" : "The origin reset the connection",
        parser.started ? "upstream-truncated-head" : "upstream-reset",
        error,
      );
    }
    if (!got) {
      closeQuietly(up.conn);
      throwIfAbandoned();
      if (plan.canRetry) return RETRY;
      throw new UpstreamError("The origin closed the connection without a response", "upstream-closed");
    }
    const res = parser.responseHead();
    if (res.status >= 200) return res;
    if (res.status === 101) {
      if (!plan.upgrade) {
        closeQuietly(up.conn);
        throw new UpstreamError("The origin switched protocols without being asked", "upstream-unexpected-101");
      }
      return res;
    }
    // RFC 9110 §15.2: relay 1xx, but never to an HTTP/1.0 client.
    if (plan.req.minor === 1) {
      const interim = stripHopByHop(res.fields, connectionTokens(res.fields));
      interim.push(viaField(ctx.options.via, res.minor));
      await writeOrDrop(client.out, serializeHead(`HTTP/1.1 ${res.status} ${res.reason}`, interim), up.conn);
    }
  }
}

/** What goes to the client once the response head stage is done. */
interface Outgoing {
  status: number;
  reason: string;
  /** End-to-end fields (framing fields are added when written). */
  fields: Field[];
  /** Null: the origin's body as framed by the origin; else a body the proxy frames. */
  own: Exclude<import("./message_view.ts").BodySource, { kind: "wire" }> | null;
  /** The origin's body reader when hooks saw it (its state tells whether the connection can be reused). */
  wire: BodyReader | null;
  /** Whether the origin's body was left unread (the upstream connection then closes). */
  abandoned: boolean;
}

/** Stages: response head (the user's onResponse), body relay, settle. */
async function respond(
  ctx: ExchangeContext,
  client: ClientSide,
  up: UpstreamConn,
  plan: Plan,
  pump: Pump,
  res: ResponseHead,
): Promise<boolean> {
  const req = plan.req;
  let resFraming: Framing;
  try {
    resFraming = responseFraming(res, req.method);
  } catch (error) {
    closeQuietly(up.conn);
    throw new UpstreamError("The origin sent a response with invalid framing", "upstream-bad-framing", error);
  }
  const resTokens = connectionTokens(res.fields);
  // Read-side completion is decisive: the origin cannot have answered after the whole body
  // unless we had read all of it. An early answer leaves the rest unread: close after it.
  const early = !plan.send.body.done || (plan.send.drain !== null && !plan.send.drain.done);
  const clientClose = !plan.persistent || early || ctx.stopping;
  const fields = stripHopByHop(res.fields, resTokens);
  fields.push(viaField(ctx.options.via, res.minor));
  // RFC 9110 §6.6.1: a recipient with a clock MUST add Date if it is missing.
  if (!has(res.fields, "date")) fields.push(["Date", httpDate()]);
  let outgoing: Outgoing = { status: res.status, reason: res.reason, fields, own: null, wire: null, abandoned: false };
  if (ctx.hooks !== null && ctx.hooks.onResponse !== null && plan.hreq !== null) {
    try {
      const hooked = responseHooks(ctx, client, up, plan, res, resFraming, outgoing);
      outgoing = isThenable(hooked) ? await hooked : hooked;
    } catch (error) {
      closeQuietly(up.conn);
      throw error;
    }
  }
  const keepOpen = outgoing.own === null
    ? await relayWireBody(ctx, client, up, plan, res, resFraming, resTokens, outgoing, clientClose)
    : await sendOwnBody(client, up, req, outgoing, clientClose);
  if (keepOpen === null) return false; // aborted mid-body

  // Stage: settle.
  if (early) {
    // RFC 9112 §9.6: the response said "close", so close now: end our sending side at
    // once, drain what the client still sends for a moment (a full close with unread
    // data would reset the connection and could destroy the response), then close.
    pump.discard = true;
    closeQuietly(up.conn);
    await closeWriteQuietly(client.conn);
    await settleWithin(pump.promise, LINGER_MS);
    return false;
  }
  if (pump.promise !== null) await pump.promise;
  if (pump.clientError !== null || pump.upstreamWriteFailed || outgoing.abandoned) {
    closeQuietly(up.conn);
    return false;
  }
  const reusable = res.minor === 1 && !resTokens.has("close") && resFraming.kind !== "close" &&
    (outgoing.wire === null || outgoing.wire.done);
  // NTLM and Negotiate authenticate the connection, not the request (RFC 4559 §4): such a
  // connection is kept for this client alone and never handed to another one.
  const pin = plan.pin || (res.status === 401 && hasConnectionAuth(getAll(res.fields, "www-authenticate")));
  if (!reusable) closeQuietly(up.conn);
  else if (pin && keepOpen) {
    if (client.pinned !== null && client.pinned !== up) closeQuietly(client.pinned.conn);
    client.pinned = up;
  } else if (pin) closeQuietly(up.conn);
  else ctx.pool.release(up);
  return keepOpen;
}

/**
 * Runs onResponse on the response head; returns what to send instead (or the
 * same). Synchronous when the hook is (no promise on that path).
 */
function responseHooks(
  ctx: ExchangeContext,
  client: ClientSide,
  up: UpstreamConn,
  plan: Plan,
  res: ResponseHead,
  resFraming: Framing,
  outgoing: Outgoing,
): Outgoing | Promise<Outgoing> {
  const wire = bodyReader(up.reader, resFraming, ctx.responseChunkedLimits);
  const hres = new HookResponse(res.status, res.reason, outgoing.fields, wire, plan.req.method);
  const onResponse = ctx.hooks!.onResponse!;
  const hctx = client.hook!.ctx;
  const hreq = plan.hreq!;
  const result = callHook(client, ctx, "onResponse", () => onResponse(hres, hreq, hctx));
  const settle = (reply: Reply | void): Outgoing => {
    if (reply === undefined || reply === null) return checkedResponse(hres, wire, res.status);
    const answer = normalizeReply(reply);
    if (answer === null) throw new HookError("onResponse", "invalid");
    return fromAnswer(answer, wire);
  };
  return isThenable(result) ? result.then(settle) : settle(result);
}

/** The outgoing response for a hook's reply that replaces the origin's. */
function fromAnswer(answer: Answer, wire: BodyReader): Outgoing {
  const fields = answer.fields;
  if (!has(fields, "date")) fields.push(["Date", httpDate()]);
  return { status: answer.status, reason: answer.reason, fields, own: answer.body, wire, abandoned: !wire.done };
}

/** Validates what onResponse left (status, reason, fields) and picks the body to send. */
function checkedResponse(hres: HookResponse, wire: BodyReader, originalStatus: number): Outgoing {
  const status = hres.status;
  if (!isFinalStatus(status) || !isReasonPhrase(hres.reason)) throw new HookError("onResponse", "invalid");
  const fields = hres.fieldsNeedCheck ? finishHookFields(hres.currentFields, "onResponse") : hres.currentFields;
  if (hres.bodyModified) {
    const body = hres.body;
    const own = body.source as Outgoing["own"];
    return { status, reason: hres.reason, fields, own, wire, abandoned: body.orphan !== null };
  }
  // A status changed to one without a body (204, 304): the origin's body is not sent.
  if ((status === 204 || status === 304) && status !== originalStatus) {
    return {
      status,
      reason: hres.reason,
      fields,
      own: { kind: "bytes", data: new Uint8Array(0) },
      wire,
      abandoned: true,
    };
  }
  return { status, reason: hres.reason, fields, own: null, wire: null, abandoned: false };
}

/**
 * Body relay of the origin's body with its framing re-chosen for the client.
 * Resolves to whether the client connection stays open, or null when the
 * exchange was aborted mid-body.
 */
async function relayWireBody(
  ctx: ExchangeContext,
  client: ClientSide,
  up: UpstreamConn,
  plan: Plan,
  res: ResponseHead,
  resFraming: Framing,
  resTokens: ReadonlySet<string>,
  outgoing: Outgoing,
  clientClose: boolean,
): Promise<boolean | null> {
  const req = plan.req;
  const fields = outgoing.fields;
  let chunkedToClient = false;
  switch (resFraming.kind) {
    case "none": {
      // HEAD and 304 responses keep the length they announce, if it is a valid one.
      if (res.status !== 204 && res.status >= 200) {
        let length = -1;
        try {
          length = contentLength(res.fields);
        } catch {
          // An invalid length on a body-less response is dropped rather than relayed.
        }
        if (length >= 0) fields.push(["Content-Length", String(length)]);
      }
      break;
    }
    case "length":
      fields.push(["Content-Length", String(resFraming.length)]);
      break;
    case "chunked":
    case "close":
      if (req.minor === 1) {
        // Codings other than chunked stay applied to the body and stay listed (RFC 9112 §6.1).
        const codings = resFraming.codings;
        fields.push(["Transfer-Encoding", codings.length > 0 ? `${codings.join(", ")}, chunked` : "chunked"]);
        chunkedToClient = true;
      } else {
        if (resFraming.codings.length > 0) {
          closeQuietly(up.conn);
          throw new UpstreamError(
            "The origin used a transfer coding an HTTP/1.0 client cannot receive",
            "upstream-coding-for-http10",
          );
        }
        clientClose = true; // an HTTP/1.0 client sees the end of the body as the close
      }
      break;
  }
  // Without chunked framing to the client there is no trailer section to announce.
  if (!chunkedToClient) dropField(fields, "trailer");
  if (clientClose) fields.push(["Connection", "close"]);

  // Whatever part of a Content-Length body is already buffered goes out with the head.
  let inline: Uint8Array | null = null;
  let rest = resFraming;
  if (resFraming.kind === "length" && resFraming.length > 0 && up.reader.buffered > 0) {
    inline = up.reader.take(Math.min(resFraming.length, up.reader.buffered))!;
    rest = { kind: "length", length: resFraming.length - inline.length };
  }
  const scratch = takeBuffer(SCRATCH_BYTES);
  try {
    const bytes = serializeHead(`HTTP/1.1 ${outgoing.status} ${outgoing.reason}`, fields, inline, scratch);
    await writeOrDrop(client.out, bytes, up.conn);
  } finally {
    giveBuffer(scratch);
  }
  client.finalHeadSent = true;
  client.draft.status = outgoing.status;

  const resBody = bodyReader(up.reader, rest, ctx.responseChunkedLimits);
  const writer: BodyWriter = chunkedToClient ? new ChunkedBodyWriter(client.out) : new RawBodyWriter(client.out);
  // (A body that went out whole with the head needs no loop: an identity writer has no end.)
  while (!resBody.done || chunkedToClient) {
    let data: Uint8Array | null;
    try {
      data = await resBody.next();
      client.activity = coarseNow();
    } catch (error) {
      // After the head is on the wire a failure can only abort: never fake a complete body.
      closeQuietly(up.conn);
      client.draft.error = "upstream-body-failed";
      ctx.logger.log("warn", "upstream-body-failed", { origin: up.key, error: describe(error) });
      return null;
    }
    try {
      if (data === null) {
        await writer.end(chunkedToClient ? endToEndTrailers(resBody.trailers, resTokens) : []);
        break;
      }
      await writer.write(data);
      client.activity = coarseNow(); // a slow reader still makes progress
    } catch {
      // The client went away mid-response; the origin side cannot be reused.
      closeQuietly(up.conn);
      client.draft.error = "client-gone";
      return null;
    }
  }
  return !clientClose;
}

/**
 * Sends a body a hook produced (read, replaced, transformed, or a reply),
 * framed by the proxy. Resolves to whether the client connection stays open,
 * or null when the exchange was aborted mid-body.
 */
async function sendOwnBody(
  client: ClientSide,
  up: UpstreamConn,
  req: RequestHead,
  outgoing: Outgoing,
  clientClose: boolean,
): Promise<boolean | null> {
  const own = outgoing.own!;
  const framing = ownFraming(own.kind === "bytes" ? own.data.length : -1, outgoing.status, req.method, req.minor);
  if (framing.kind === "close") clientClose = true;
  const fields = outgoing.fields;
  dropField(fields, "trailer");
  addFramingFields(fields, framing, clientClose);
  const inline = own.kind === "bytes" && framing.kind === "length" && framing.send ? own.data : null;
  const source = own.kind === "stream" ? new StreamBody(own.stream, (e) => hookFailure("onResponse", e)) : null;
  if (source !== null && (framing.kind === "none" || framing.kind === "length")) source.cancel();
  await writeOrDrop(
    client.out,
    serializeHead(`HTTP/1.1 ${outgoing.status} ${outgoing.reason}`, fields, inline),
    up.conn,
  );
  client.finalHeadSent = true;
  client.draft.status = outgoing.status;
  if (source === null || source.done) return !clientClose;
  const writer: BodyWriter = framing.kind === "chunked"
    ? new ChunkedBodyWriter(client.out)
    : new RawBodyWriter(client.out);
  try {
    await pumpBody(source, writer, () => client.activity = coarseNow());
    await writer.end();
  } catch (error) {
    // After the head is on the wire a failure can only abort: never fake a complete body.
    closeQuietly(up.conn);
    source.cancel();
    client.draft.error = error instanceof ProxyError ? error.code : "client-gone";
    return null;
  }
  return !clientClose;
}

/** Whether any credentials or challenges use a connection-oriented scheme (NTLM, Negotiate). */
function hasConnectionAuth(values: readonly string[]): boolean {
  for (const value of values) if (/(?:^|,)\s*(?:ntlm|negotiate)\b/i.test(value)) return true;
  return false;
}
