/**
 * One absolute-form exchange (RFC 9110 §7.6, RFC 9112), as stages in order:
 * request policy (built-in checks, then the user's `onRequest`), route
 * (destination -> pooled or new connection), send (head, then the body
 * streaming while the response is awaited), response head (1xx, 101, the
 * user's `onResponse`), body relay, and settle (pool, pin or close). The
 * CONNECT and Upgrade relays are in connect.ts, local answers in local.ts.
 *
 * Without hooks, none of the hook stages allocate or await anything.
 *
 * @module
 */
import { coarseNow, deadlineIn } from "./clock.ts";
import {
  describe,
  ForbiddenError,
  PrematureEofError,
  ProxyAuthError,
  ProxyError,
  UpstreamError,
  UpstreamTimeoutError,
} from "./errors.ts";
import { checkDestination, checkPooled } from "./destination.ts";
import {
  connectionTokens,
  dropField,
  endToEndTrailers,
  type Field,
  getAll,
  has,
  splitList,
  stripHopByHop,
  taggedViaField,
  viaField,
} from "./fields.ts";
import { clientFraming, type Framing, requestFraming, responseFraming } from "./framing.ts";
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
import type { AbsoluteTarget } from "./target.ts";
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
import { pageAnswer } from "./pages.ts";
import { hopStatus } from "./proxy_status.ts";
import { authorityOf, bypassesParent, type ParentProxy } from "./parent.ts";
import { addFramingFields, ownFraming, streamBody } from "./answer.ts";
import type { UpstreamConn } from "./upstream.ts";
import type { RecordDraft } from "./record.ts";
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
const EMPTY_BYTES = new Uint8Array(0);
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);
/** Interim (1xx) responses relayed per exchange at most, and their bytes; more is 502. */
const MAX_INTERIM_RESPONSES = 32;
const MAX_INTERIM_BYTES = 64 * 1024;

/**
 * Handles one request whose head has been read. Resolves to whether the client
 * connection may carry another request. Synchronous up to the first I/O (the
 * policy stages run without an async frame of their own).
 *
 * @throws {ProxyError} before the final response head is sent (thrown or as a
 *   rejection); the caller answers with it.
 */
export function handleRequest(ctx: ExchangeContext, client: ClientSide, head: RequestHead): Promise<boolean> {
  // Stage: request policy, built-in checks.
  const fields = head.fields;
  checkHostFields(fields, head.minor);
  const framing = requestFraming(head);
  const tokens = connectionTokens(fields);
  const persistent = isPersistent(head.minor, tokens, ctx.stopping);
  const hasBody = framing.kind === "chunked" || (framing.kind === "length" && framing.length > 0);

  if (ctx.adminOnly && head.target.charCodeAt(0) !== 0x2f) {
    throw new ForbiddenError(
      "This port serves the proxy's own pages only (/metrics, /healthz, ...)",
      "admin-port-only",
    );
  }
  // Stage: authentication, for everything but the proxy's own pages.
  if (ctx.credentials !== null && head.target.charCodeAt(0) !== 0x2f) authenticate(ctx, client, fields);
  if (head.method === "CONNECT") return connectTunnel(ctx, client, head);
  if (head.target.charCodeAt(0) === 0x2f) {
    // Origin-form: addressed to the proxy itself (its pages): never forwarded, no hooks. A request that
    // came through this proxy (to its own address) is a loop, not an admin client on loopback.
    checkLoop(fields, ctx.options.via, ctx.options.instanceId);
    const page = pageAnswer({
      method: head.method,
      target: head.target,
      host: firstValue(fields, "host"),
      client: clientHost(client),
      local: client.local ?? client.conn.localAddr as Deno.NetAddr,
      adminPort: ctx.adminOnly,
    }, ctx.pages);
    return answerLocally(ctx, client, head, page, persistent && !hasBody, null);
  }
  const dest = targetVerdict(head);
  if (dest === null) {
    // OPTIONS * addressed to the proxy itself (RFC 9110 §9.3.7): not an absolute-form request, no hooks.
    return answerLocally(ctx, client, head, optionsAnswer(), persistent && !hasBody, null);
  }
  checkLoop(fields, ctx.options.via, ctx.options.instanceId);
  const maxForwards = maxForwardsOf(head);
  // RFC 9110 §7.8: forward an upgrade offer (Connection: upgrade + Upgrade) from an
  // HTTP/1.1 client on a body-less request; otherwise Upgrade is hop-by-hop and dropped.
  const upgrade = head.minor === 1 && tokens.has("upgrade") && !hasBody && has(fields, "upgrade");
  const keep = upgrade ? KEEP_UPGRADE : undefined;
  const plan: Plan = {
    req: head,
    persistent,
    framing,
    hasBody,
    continued: false,
    tokens,
    upgrade,
    keep,
    dest,
    out: forwardFields(
      head,
      tokens,
      dest.authority,
      maxForwards,
      keep,
      taggedViaField(ctx.options.via, ctx.options.instanceId, head.minor),
    ),
    hreq: null,
    requestHead: EMPTY_BYTES,
    parent: null,
    inline: null,
    body: EMPTY_BODY,
    chunked: false,
    drain: null,
    canRetry: false,
    pin: false,
    pumping: null,
    clientError: null,
    upstreamWriteFailed: false,
    discard: false,
    headSeen: false,
    resRest: NO_BODY,
    resChunked: false,
    resClose: false,
    resStatus: 0,
    resScratch: EMPTY_BYTES,
  };
  const hooks = ctx.hooks;
  if (hooks !== null && client.hook !== null && (hooks.onRequest || hooks.onResponse || hooks.onError)) {
    const wire = () => bodyReader(client.reader, framing, ctx.chunkedLimits);
    plan.hreq = client.hook.req = new HookRequest(
      head.method,
      head.target,
      dest,
      plan.out,
      wire,
      continueFirst(client, plan),
    );
  }
  const builtin = maxForwardsAnswer(head, maxForwards);
  if (builtin !== null) return answerLocally(ctx, client, head, builtin, persistent && !hasBody, null);

  // Stage: request policy, the user's onRequest (no promise when it is synchronous and lets the request go on).
  if (plan.hreq !== null && hooks!.onRequest !== null) {
    const answered = onRequestStage(ctx, client, plan.hreq, plan);
    if (answered !== null) return answered.then((keepAlive) => keepAlive ?? forward(ctx, client, plan));
  }
  return forward(ctx, client, plan);
}

/**
 * A client that sent `Expect: 100-continue` waits for a 100 before its body
 * (RFC 9110 §10.1.1). When a hook reads the body before the origin is contacted,
 * the proxy sends that 100 itself, then forwards the request without the
 * expectation (the body goes with it) and does not relay the origin's own 100.
 */
function continueFirst(client: ClientSide, plan: Plan): (() => Promise<void>) | undefined {
  if (plan.req.minor !== 1 || !plan.hasBody || !expectsContinue(plan.req.fields)) return undefined;
  return async () => {
    plan.continued = true;
    await writeAll(client.out, CONTINUE);
  };
}

/** Whether `Expect` holds the 100-continue expectation. */
function expectsContinue(fields: readonly Field[]): boolean {
  for (const v of splitList(getAll(fields, "expect"))) if (v.toLowerCase() === "100-continue") return true;
  return false;
}

const CONTINUE = new TextEncoder().encode("HTTP/1.1 100 Continue\r\n\r\n");

/**
 * Stage: the user's onRequest. Returns null when the exchange goes on, or a
 * promise of the answer's keep-alive when a hook answered (null again when an
 * asynchronous hook let the request go on).
 */
function onRequestStage(
  ctx: ExchangeContext,
  client: ClientSide,
  hreq: HookRequest,
  plan: Plan,
): null | Promise<boolean | null> {
  const onRequest = ctx.hooks!.onRequest!;
  const hctx = client.hook!.ctx;
  const after = (reply: Reply | void): null | Promise<boolean> => {
    if (reply === undefined || reply === null) {
      if (!isValidDestination(hreq.destination)) throw new HookError("onRequest", "invalid");
      return null;
    }
    const answer = normalizeReply(reply);
    if (answer === null) throw new HookError("onRequest", "invalid");
    const wire = hreq.body.wire;
    return answerLocally(ctx, client, plan.req, answer, plan.persistent, wire.done ? null : wire);
  };
  const result = callHook(client, ctx, "onRequest", () => onRequest(hreq, hctx));
  return isThenable(result) ? result.then(after) : after(result);
}

/** The fields a hook left, checked again; `Host` kept single (and restored if a hook removed it). */
function finishRequestFields(hreq: HookRequest, keep: ReadonlySet<string> | undefined, authority: string): Field[] {
  const out = finishHookFields(hreq.currentFields, "onRequest", keep);
  const hosts = getAll(out, "host").length;
  if (hosts > 1) throw new HookError("onRequest", "invalid");
  if (hosts === 0) out.unshift(["Host", authority]);
  return out;
}

/**
 * Stages: the request body's framing, route (destination -> pinned, pooled or
 * new connection) and send, with one retry on a fresh connection when a pooled
 * one turns out stale.
 */
async function forward(ctx: ExchangeContext, client: ClientSide, plan: Plan): Promise<boolean> {
  const { req: head, dest, hreq } = plan;
  let hostname = dest.hostname;
  let port = dest.port;
  let path = dest.path;
  if (hreq !== null) {
    ({ hostname, port } = hreq.destination);
    path = hreq.path;
    if (hreq.fieldsNeedCheck) plan.out = finishRequestFields(hreq, plan.keep, dest.authority);
  }
  if (plan.upgrade) plan.out.push(["Connection", "Upgrade"]);
  if (plan.continued) dropField(plan.out, "expect"); // the 100 was sent; the body goes with the head
  if (hreq !== null && hreq.bodyModified) hookBody(plan, hreq);
  else wireBody(ctx, client, plan);
  hreq?.seal("The request body has been forwarded already");
  // RFC 9110 §9.2.2: only idempotent requests are retried, and only when the whole request
  // (head and any body) is in `requestHead` and can be sent again.
  const retryable = IDEMPOTENT.has(head.method) && plan.body.done && plan.drain === null;
  // Through a parent proxy: absolute-form, with our own credentials for it (the client's were consumed here).
  const parent = ctx.parent !== null && !bypassesParent(ctx.noProxy, hostname, port) ? ctx.parent : null;
  plan.parent = parent;
  if (parent !== null) {
    const authority = hostname === dest.hostname && port === dest.port ? dest.authority : authorityOf(hostname, port);
    path = path === "*" ? `http://${authority}` : `http://${authority}${path}`;
  }
  const auth = hasConnectionAuth(getAll(head.fields, "authorization"));
  // The head is built in a recycled buffer, kept until no retry can need it again.
  const scratch = takeBuffer(SCRATCH_BYTES);
  // Our credentials for the parent go on the wire only, never into the fields hooks can read.
  const outFields = parent?.authorization
    ? [...plan.out, ["Proxy-Authorization", parent.authorization] as Field]
    : plan.out;
  plan.requestHead = serializeHead(`${head.method} ${path} HTTP/1.1`, outFields, plan.inline, scratch);
  const draft = client.draft;
  const key = parent === null ? `${hostname}:${port}` : `${parent.hostname}:${parent.port}`;
  try {
    for (let attempt = 0;; attempt++) {
      // A connection pinned to this client (NTLM/Negotiate) serves its requests to that origin.
      const pinned = attempt === 0 && client.pinned !== null && client.pinned.key === key ? client.pinned : null;
      if (pinned !== null) {
        client.pinned = null;
        pinned.reused = true; // it may have gone stale while idle: the retry rules apply
      }
      // Stage: destination policy. Through a parent every request is checked by name (the pooled
      // connection is the parent's); a pooled direct connection by the address it is connected to.
      if (attempt === 0 && parent !== null) checkDestination(ctx.destinations, hostname, port, false);
      let up = pinned ?? (attempt === 0 ? ctx.pool.take(key) : null);
      if (up !== null && parent === null) {
        try {
          checkPooled(ctx.destinations, hostname, port, up.conn);
        } catch (error) {
          if (pinned === null) ctx.pool.release(up);
          else closeQuietly(up.conn);
          throw error;
        }
      }
      if (up === null) {
        // A new connection: to the address the check resolved and allowed.
        const checked = parent === null
          ? checkDestination(ctx.destinations, hostname, port, true, ctx.options.connectTimeoutMs)
          : hostname;
        const dial = typeof checked === "string" ? checked : await checked;
        const started = draft.timed ? performance.now() : 0;
        up = parent === null
          ? await ctx.pool.open(hostname, port, dial)
          : await ctx.pool.open(parent.hostname, parent.port);
        if (draft.timed) draft.connectMs = Math.round((performance.now() - started) * 100) / 100;
      }
      client.upstream = up.conn;
      draft.upstream = up.conn;
      draft.parent = parent !== null;
      draft.reused = up.reused;
      try {
        plan.canRetry = retryable && up.reused;
        plan.pin = auth || pinned !== null;
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

/**
 * The client's body as it arrives. A small body that has fully arrived goes out in
 * the same write as the head. A whole chunked body is validated before the origin is
 * contacted (a bad one gets 400 and the origin never sees the request) and, without
 * trailers, sent with a Content-Length.
 */
function wireBody(ctx: ExchangeContext, client: ClientSide, plan: Plan): void {
  const { framing, out } = plan;
  let inline: Uint8Array | null = null;
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
      plan.chunked = true;
      if (whole !== null) inline = encodeChunked(whole.data, endToEndTrailers(whole.trailers, plan.tokens));
    }
  }
  // Without a chunked body to the origin there is no trailer section to announce.
  if (framing.kind !== "chunked") dropField(out, "trailer");
  plan.inline = inline;
  plan.body = bodyReader(client.reader, inline !== null ? NO_BODY : framing, ctx.chunkedLimits);
}

/** A body a hook read, replaced or transformed: Content-Length when its length is known, else chunked. */
function hookBody(plan: Plan, hreq: HookRequest): void {
  const source = hreq.body.source;
  const out = plan.out;
  dropField(out, "trailer");
  plan.drain = hreq.body.orphan;
  if (source.kind === "bytes") {
    const data = source.data;
    if (data.length > 0 || plan.hasBody) out.push(["Content-Length", String(data.length)]);
    plan.inline = data.length > 0 ? data : null;
    plan.body = EMPTY_BODY;
    return;
  }
  out.push(["Transfer-Encoding", "chunked"]);
  const stream = source.kind === "stream" ? source.stream : new ReadableStream<Uint8Array>();
  plan.body = new StreamBody(stream, (error) => hookFailure("onRequest", error));
  plan.chunked = true;
}

/**
 * One request through its stages: what the policy stage decided, how the body
 * goes, the state of one attempt (the body pump), and the response head's
 * decisions. One object per request (fewer allocations on the hot path).
 */
interface Plan {
  /** The client's request head. */
  readonly req: RequestHead;
  /** The parent proxy the request goes through, or null (direct). */
  parent: ParentProxy | null;
  /** Whether the client asked to keep its connection. */
  readonly persistent: boolean;
  /** The request body's framing from the client. */
  readonly framing: Framing;
  /** Whether the client sent a body. */
  readonly hasBody: boolean;
  /** Set when the proxy answered the client's `Expect: 100-continue` itself (a hook read the body). */
  continued: boolean;
  /** The request's `Connection` tokens (lower-cased). */
  readonly tokens: ReadonlySet<string>;
  /** Whether an upgrade was offered to the origin. */
  readonly upgrade: boolean;
  /** Fields kept although hop-by-hop (`upgrade` when an upgrade is forwarded). */
  readonly keep: ReadonlySet<string> | undefined;
  /** Where the request-target points. */
  readonly dest: AbsoluteTarget;
  /** The fields to forward. */
  out: Field[];
  /** The request as hooks saw it (null without hooks). */
  hreq: HookRequest | null;
  /** The serialized head for the origin. */
  requestHead: Uint8Array;
  /** Body bytes written with the head, if any. */
  inline: Uint8Array | null;
  /** The rest of the body, streamed after the head. */
  body: BodyReader;
  /** Whether `body` is sent chunked (else as is: its length is in the head). */
  chunked: boolean;
  /** The client's original body when a hook replaced it unread: drained, never forwarded. */
  drain: BodyReader | null;
  /** Whether a failure before any response byte may be retried on a fresh connection. */
  canRetry: boolean;
  /** Whether the connection carries connection-oriented auth and stays with this client. */
  pin: boolean;
  // The request body streaming to the origin while the response is awaited (reset per attempt):
  /** Settles when the whole body (and any drained original) has been read; null when there was none. */
  pumping: Promise<void> | null;
  /** Set when reading the client's body failed. */
  clientError: unknown;
  /** Set when the origin stopped reading. */
  upstreamWriteFailed: boolean;
  /** After an early answer: drain the client's body instead of forwarding it. */
  discard: boolean;
  /** Set once the response head is in: the pump must not start the response timer. */
  headSeen: boolean;
  // The response head toward the client (wireResponseHead):
  /** The rest of the origin's body to copy. */
  resRest: Framing;
  resChunked: boolean;
  resClose: boolean;
  resStatus: number;
  /** The buffer the response head was built in (given back once written). */
  resScratch: Uint8Array;
}

async function exchange(
  ctx: ExchangeContext,
  client: ClientSide,
  up: UpstreamConn,
  plan: Plan,
): Promise<boolean | typeof RETRY> {
  const { persistent, canRetry } = plan;
  try {
    if (client.draft.timed && ctx.options.timingHeader) {
      client.draft.sentMs = performance.now() - client.draft.startedAt;
    }
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
  plan.clientError = null;
  plan.upstreamWriteFailed = false;
  plan.discard = false;
  plan.headSeen = false;
  plan.pumping = plan.body.done && plan.drain === null ? null : pumpRequestBody(client, up, plan, startResponseTimer);
  if (plan.pumping === null) startResponseTimer();

  // Stage: response head (interim responses relayed, then the final head).
  let res: ResponseHead;
  let interim = 0;
  let interimBytes = 0;
  try {
    while (true) {
      const parser = new HeadParser("response", ctx.responseLimits);
      let got: boolean;
      try {
        got = await up.reader.readHead(parser);
      } catch (error) {
        return headFailed(client, up, plan, parser, error);
      }
      if (!got) return headFailed(client, up, plan, parser, null);
      res = parser.responseHead();
      if (isFinalHead(res, plan, up)) break;
      // A response has begun: from now on a failure is never retried (the client has seen it).
      plan.canRetry = false;
      // An origin must not hold the exchange with interim responses without end.
      if (++interim > MAX_INTERIM_RESPONSES || (interimBytes += parser.bytesConsumed) > MAX_INTERIM_BYTES) {
        closeQuietly(up.conn);
        throw new UpstreamError("The origin sent too many interim responses", "upstream-too-many-interim");
      }
      // RFC 9110 §15.2: relay 1xx, but never to an HTTP/1.0 client (nor a 100 the proxy already sent).
      if (plan.req.minor === 1 && !(plan.continued && res.status === 100)) {
        await writeOrDrop(client.out, interimHead(ctx, res), up.conn);
      }
    }
  } finally {
    plan.headSeen = true; // the pump must not start a timer from now on
    watch.upstream = null; // the exchange moved on: the connection may be pooled for others now
    client.responseDeadline = 0;
    client.inBody = true;
    client.activity = coarseNow();
  }
  if (client.draft.timed) {
    client.draft.firstByteMs = Math.round((performance.now() - client.draft.startedAt) * 100) / 100;
  }
  if (res.status === 101) return await switchProtocols(ctx, client, res, up);
  return respond(ctx, client, up, plan, res);
}

/** Streams the request body (and drains a replaced original), then starts the response timer. */
async function pumpRequestBody(
  client: ClientSide,
  up: UpstreamConn,
  plan: Plan,
  startResponseTimer: () => void,
): Promise<void> {
  const pump = plan;
  const { body, drain } = plan;
  // A hook's body stream is the session's while it is sent (the body timeout cancels a stalled one).
  if (body instanceof StreamBody) client.stream = body;
  if (!body.done) {
    const writer: BodyWriter = plan.chunked ? new ChunkedBodyWriter(up.conn) : new RawBodyWriter(up.conn);
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
  if ((client.stream as unknown) === body) client.stream = null;
  if (!pump.headSeen) startResponseTimer();
}

/**
 * Why reading the origin's response head failed (`error` null: a clean close
 * before any byte): our doing (client side, deadline), a retry on a fresh
 * connection, or a 502. Returns RETRY or throws.
 */
function headFailed(
  client: ClientSide,
  up: UpstreamConn,
  plan: Plan,
  parser: HeadParser,
  error: unknown,
): typeof RETRY {
  closeQuietly(up.conn);
  if (plan.clientError !== null) throw plan.clientError;
  if (client.resetWatch!.gone) {
    throw new PrematureEofError("The client reset the connection while waiting for the origin");
  }
  if (client.responseTimedOut) {
    throw new UpstreamTimeoutError("Timed out waiting for the origin's response", "upstream-response-timeout");
  }
  if (error === null) {
    if (plan.canRetry) return RETRY;
    throw new UpstreamError("The origin closed the connection without a response", "upstream-closed");
  }
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

/**
 * Whether a response head ends the wait: a final status, or a 101 that was
 * asked for, to a protocol the client offered (RFC 9110 §7.8, §15.2.2).
 */
function isFinalHead(res: ResponseHead, plan: Plan, up: UpstreamConn): boolean {
  if (res.status >= 200) return true;
  if (res.status !== 101) return false;
  if (!plan.upgrade || !upgradeOffered(plan.req.fields, res.fields)) {
    closeQuietly(up.conn);
    throw new UpstreamError("The origin switched protocols without being asked", "upstream-unexpected-101");
  }
  return true;
}

/** Whether every protocol a 101 names in `Upgrade` was offered by the request (names compared without case). */
export function upgradeOffered(request: readonly Field[], response: readonly Field[]): boolean {
  const offered = new Set(splitList(getAll(request, "upgrade")).map((p) => p.toLowerCase().split("/")[0]));
  const chosen = splitList(getAll(response, "upgrade"));
  if (chosen.length === 0) return false;
  return chosen.every((p) => offered.has(p.toLowerCase().split("/")[0]));
}

/** An interim (1xx) response head as relayed to the client. */
function interimHead(ctx: ExchangeContext, res: ResponseHead): Uint8Array {
  const interim = stripHopByHop(res.fields, connectionTokens(res.fields));
  interim.push(viaField(ctx.options.via, res.minor));
  return serializeHead(`HTTP/1.1 ${res.status} ${res.reason}`, interim);
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
  res: ResponseHead,
): Promise<boolean> {
  const pump = plan;
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
  const early = !plan.body.done || (plan.drain !== null && !plan.drain.done) ||
    // A hook's transform may stop before the client's body ended: the rest is never a next request.
    (plan.hreq !== null && plan.hreq.bodyModified && !plan.hreq.body.wire.done);
  const clientClose = !plan.persistent || early || ctx.stopping;
  // A parent proxy's Proxy-Authenticate is relayed (RFC 9110 §11.7.1 allows passing it down a hierarchy).
  const fields = stripHopByHop(res.fields, resTokens, plan.parent === null ? undefined : KEEP_PROXY_AUTHENTICATE);
  fields.push(viaField(ctx.options.via, res.minor));
  // RFC 9110 §6.6.1: a recipient with a clock MUST add Date if it is missing.
  if (!has(res.fields, "date")) fields.push(["Date", httpDate()]);
  if (ctx.options.timingHeader) fields.push(serverTiming(client.draft));
  // An error answer from the parent proxy is relayed as it is, with a Proxy-Status member naming our hop.
  if (plan.parent !== null && res.status >= 400) fields.push(hopStatus(ctx.options, res.status, plan.parent));
  let keepOpen: boolean | null;
  let wire: BodyReader | null = null;
  let abandoned = false;
  let outgoing: Outgoing | null = null;
  if (ctx.hooks !== null && ctx.hooks.onResponse !== null && plan.hreq !== null) {
    try {
      const hooked = responseHooks(ctx, client, up, plan, res, resFraming, fields);
      outgoing = isThenable(hooked) ? await hooked : hooked;
    } catch (error) {
      closeQuietly(up.conn);
      throw error;
    }
    ({ wire, abandoned } = outgoing);
  }
  // An HTTP/1.0 client sees the end of a close-delimited body only as the close, which Deno
  // cannot make a reset: a body of unknown length is read first (up to a cap), so a failure
  // becomes a 502 and a whole body goes out with a Content-Length.
  if (
    (outgoing === null || outgoing.own === null) && req.minor === 0 &&
    (resFraming.kind === "chunked" || resFraming.kind === "close") && resFraming.codings.length === 0 &&
    !isEventStream(outgoing?.fields ?? fields)
  ) {
    const first = await readAheadForHttp10(up, bodyReader(up.reader, resFraming, ctx.responseChunkedLimits));
    wire = first.body;
    outgoing = {
      status: outgoing?.status ?? res.status,
      reason: outgoing?.reason ?? res.reason,
      fields: outgoing?.fields ?? fields,
      own: first.own,
      wire: first.body,
      abandoned: false,
    };
  }
  // Stage: body relay, of the origin's body (re-framed) or one a hook produced.
  if (outgoing === null || outgoing.own === null) {
    const bytes = wireResponseHead(up, plan, res, resFraming, outgoing?.fields ?? fields, clientClose, outgoing);
    try {
      await writeOrDrop(client.out, bytes, up.conn);
    } finally {
      giveBuffer(plan.resScratch);
    }
    client.finalHeadSent = true;
    client.draft.status = plan.resStatus;
    if (client.draft.timed) client.draft.contentType = firstValue(outgoing?.fields ?? fields, "content-type");
    const chunked = plan.resChunked;
    const body = bodyReader(up.reader, plan.resRest, ctx.responseChunkedLimits);
    // A body that went out whole with the head needs no copy (and no async frame).
    const copied = (body.done && !chunked) || await copyWireBody(ctx, client, up, body, chunked, resTokens);
    keepOpen = copied ? !plan.resClose : null;
  } else keepOpen = await sendOwnBody(client, up, req, outgoing, clientClose);
  if (keepOpen === null) return false; // aborted mid-body

  // Stage: settle.
  if (early) {
    // RFC 9112 §9.6: the response said "close", so close now: end our sending side at
    // once, drain what the client still sends for a moment (a full close with unread
    // data would reset the connection and could destroy the response), then close.
    pump.discard = true;
    closeQuietly(up.conn);
    await closeWriteQuietly(client.conn);
    await settleWithin(pump.pumping, LINGER_MS);
    return false;
  }
  if (pump.pumping !== null) await pump.pumping;
  if (pump.clientError !== null || pump.upstreamWriteFailed || abandoned) {
    closeQuietly(up.conn);
    return false;
  }
  const reusable = res.minor === 1 && !resTokens.has("close") && resFraming.kind !== "close" &&
    (wire === null || wire.done);
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
  fields: Field[],
): Outgoing | Promise<Outgoing> {
  const wire = bodyReader(up.reader, resFraming, ctx.responseChunkedLimits);
  const hres = new HookResponse(res.status, res.reason, fields, wire, plan.req.method);
  const onResponse = ctx.hooks!.onResponse!;
  const hctx = client.hook!.ctx;
  const hreq = plan.hreq!;
  client.hook!.responded = true;
  const result = callHook(client, ctx, "onResponse", () => onResponse(hres, hreq, hctx));
  const settle = (reply: Reply | void): Outgoing => {
    if (reply === undefined || reply === null) return checkedResponse(hres, wire, res.status, plan.req.method);
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
function checkedResponse(hres: HookResponse, wire: BodyReader, originalStatus: number, method: string): Outgoing {
  const status = hres.status;
  if (!isFinalStatus(status) || !isReasonPhrase(hres.reason)) throw new HookError("onResponse", "invalid");
  const fields = hres.fieldsNeedCheck ? finishHookFields(hres.currentFields, "onResponse") : hres.currentFields;
  const reason = hres.reason;
  // RFC 9110 §6.4.1: responses to HEAD and 204/304 have no body; 200 and the like always frame one.
  const noBodyBefore = method === "HEAD" || originalStatus === 204 || originalStatus === 304;
  const noBodyNow = method === "HEAD" || status === 204 || status === 304;
  if (noBodyBefore !== noBodyNow) {
    // A status changed across that line: an empty body of the proxy's own (Content-Length: 0 where
    // one is framed); whatever the origin sent as a body is not relayed.
    return { status, reason, fields, own: { kind: "bytes", data: new Uint8Array(0) }, wire, abandoned: !wire.done };
  }
  if (hres.bodyModified && !noBodyNow) {
    const body = hres.body;
    const own = body.source as Outgoing["own"];
    return { status, reason, fields, own, wire, abandoned: body.orphan !== null };
  }
  // Untouched (or only read where there is no body: HEAD and 304 keep the length they announce).
  return { status, reason, fields, own: null, wire: null, abandoned: false };
}

/**
 * The head for relaying the origin's body, its framing re-chosen for the client
 * (synchronous: the hot path awaits only the write). How the body continues is
 * noted in the plan (`resRest`, `resChunked`, `resClose`, `resStatus`, `resScratch`).
 */
function wireResponseHead(
  up: UpstreamConn,
  plan: Plan,
  res: ResponseHead,
  resFraming: Framing,
  fields: Field[],
  clientClose: boolean,
  /** The status and reason a hook set (else the origin's). */
  hooked: Outgoing | null,
): Uint8Array {
  const framing = clientFraming(res, resFraming, plan.req.minor);
  switch (framing.kind) {
    case "unsendable":
      closeQuietly(up.conn);
      throw new UpstreamError(
        "The origin used a transfer coding an HTTP/1.0 client cannot receive",
        "upstream-coding-for-http10",
      );
    case "none":
    case "length":
      if (framing.length >= 0) fields.push(["Content-Length", String(framing.length)]);
      break;
    case "chunked": {
      const codings = framing.codings;
      fields.push(["Transfer-Encoding", codings.length > 0 ? `${codings.join(", ")}, chunked` : "chunked"]);
      break;
    }
    case "close":
      clientClose = true; // an HTTP/1.0 client sees the end of the body as the close
      break;
  }
  const chunked = framing.kind === "chunked";
  // Without chunked framing to the client there is no trailer section to announce.
  if (!chunked) dropField(fields, "trailer");
  if (clientClose) fields.push(["Connection", "close"]);
  // Whatever part of a Content-Length body is already buffered goes out with the head.
  let inline: Uint8Array | null = null;
  let rest = resFraming;
  if (resFraming.kind === "length" && resFraming.length > 0 && up.reader.buffered > 0) {
    inline = up.reader.take(Math.min(resFraming.length, up.reader.buffered))!;
    rest = { kind: "length", length: resFraming.length - inline.length };
  }
  const status = hooked?.status ?? res.status;
  const scratch = takeBuffer(SCRATCH_BYTES);
  plan.resRest = rest;
  plan.resChunked = chunked;
  plan.resClose = clientClose;
  plan.resStatus = status;
  plan.resScratch = scratch;
  return serializeHead(`HTTP/1.1 ${status} ${hooked?.reason ?? res.reason}`, fields, inline, scratch);
}

/**
 * Copies the origin's body to the client. After the head is on the wire a
 * failure can only abort: never fake a complete body. Resolves to false when
 * it aborted (both connections closed or unusable).
 */
async function copyWireBody(
  ctx: ExchangeContext,
  client: ClientSide,
  up: UpstreamConn,
  body: BodyReader,
  chunked: boolean,
  resTokens: ReadonlySet<string>,
): Promise<boolean> {
  const writer: BodyWriter = chunked ? new ChunkedBodyWriter(client.out) : new RawBodyWriter(client.out);
  // (A body that went out whole with the head needs no loop: an identity writer has no end.)
  while (!body.done || chunked) {
    let data: Uint8Array | null;
    try {
      data = await body.next();
      client.activity = coarseNow();
    } catch (error) {
      closeQuietly(up.conn);
      client.draft.error = "upstream-body-failed";
      ctx.logger.log("warn", "upstream-body-failed", { origin: up.key, error: describe(error) });
      return false;
    }
    try {
      if (data === null) {
        await writer.end(chunked ? endToEndTrailers(body.trailers, resTokens) : []);
        break;
      }
      await writer.write(data);
      client.activity = coarseNow(); // a slow reader still makes progress
    } catch {
      // The client went away mid-response; the origin side cannot be reused.
      closeQuietly(up.conn);
      client.draft.error = "client-gone";
      return false;
    }
  }
  return true;
}

/** Kept on answers from a parent proxy. */
const KEEP_PROXY_AUTHENTICATE: ReadonlySet<string> = new Set(["proxy-authenticate"]);

/** Bytes of a body of unknown length read ahead for an HTTP/1.0 client (issue 13, item 11). */
const HTTP10_READ_AHEAD_BYTES = 64 * 1024;
/** How long the read-ahead may hold the head back: a slow or streaming body goes on streamed. */
const HTTP10_READ_AHEAD_MS = 250;
const READ_AHEAD_EXPIRED: unique symbol = Symbol("expired");

/** `Content-Type: text/event-stream`: events must flow as they come, never held back. */
function isEventStream(fields: readonly Field[]): boolean {
  const type = firstValue(fields, "content-type");
  return type !== null && /^\s*text\/event-stream\s*(;|$)/i.test(type);
}

/**
 * Reads up to {@link HTTP10_READ_AHEAD_BYTES} of an origin's body, for at most
 * {@link HTTP10_READ_AHEAD_MS}, before any head goes to an HTTP/1.0 client. A
 * body that ends within both is sent whole with a Content-Length; a longer or
 * slower one streams on (what was read first, then the rest, starting with a
 * read still pending). A failure while reading is a 502: nothing was sent yet.
 */
async function readAheadForHttp10(
  up: UpstreamConn,
  body: BodyReader,
): Promise<{ own: Exclude<import("./message_view.ts").BodySource, { kind: "wire" }>; body: BodyReader }> {
  const parts: Uint8Array[] = [];
  let length = 0;
  let pending: Promise<Uint8Array | null> | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<typeof READ_AHEAD_EXPIRED>((resolve) => {
    timer = setTimeout(() => resolve(READ_AHEAD_EXPIRED), HTTP10_READ_AHEAD_MS);
  });
  try {
    while (length <= HTTP10_READ_AHEAD_BYTES) {
      pending = body.next();
      const piece = await Promise.race([pending, expired]);
      if (piece === READ_AHEAD_EXPIRED) {
        // The read goes on; the stream below takes its result (or its failure) first.
        pending.catch(() => {});
        break;
      }
      pending = null;
      if (piece === null) break;
      parts.push(piece.slice()); // a view is only valid until the next read
      length += piece.length;
    }
  } catch (error) {
    closeQuietly(up.conn);
    throw new UpstreamError("The origin's response ended before its body was complete", "upstream-body-failed", error);
  } finally {
    clearTimeout(timer);
  }
  if (body.done && pending === null) {
    const data = new Uint8Array(length);
    let at = 0;
    for (const p of parts) {
      data.set(p, at);
      at += p.length;
    }
    return { own: { kind: "bytes", data }, body };
  }
  let i = 0;
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (i < parts.length) {
        controller.enqueue(parts[i++]);
        return;
      }
      const next = pending ?? body.next();
      pending = null;
      const piece = await next;
      if (piece === null) controller.close();
      else controller.enqueue(piece.slice());
    },
  }, { highWaterMark: 0 });
  return { own: { kind: "stream", stream }, body };
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
  if (client.draft.timed) client.draft.contentType = firstValue(fields, "content-type");
  if (source === null || source.done) return !clientClose;
  const writer: BodyWriter = framing.kind === "chunked"
    ? new ChunkedBodyWriter(client.out)
    : new RawBodyWriter(client.out);
  try {
    await streamBody(client, source, writer);
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

/** The first value of a field, or null. */
function firstValue(fields: readonly Field[], name: string): string | null {
  const values = getAll(fields, name);
  return values.length > 0 ? values[0] : null;
}

/** Whether any credentials or challenges use a connection-oriented scheme (NTLM, Negotiate). */
function hasConnectionAuth(values: readonly string[]): boolean {
  for (const value of values) if (/(?:^|,)\s*(?:ntlm|negotiate)\b/i.test(value)) return true;
  return false;
}

/** The client's address: the one a PROXY header announced, else the socket's peer. */
function clientHost(client: ClientSide): string {
  return (client.client ?? client.conn.remoteAddr as Deno.NetAddr).hostname;
}

/** Rounds ms to 0.1 for Server-Timing. */
function tenths(ms: number): string {
  return (Math.round(ms * 10) / 10).toString();
}

/**
 * `Server-Timing` (W3C Server Timing) with the proxy's phases so far: `connect`
 * (dialling the origin; absent on a reused connection), `ttfb` (the origin's
 * time to first byte: from sending the request to the response head), `proxy`
 * (the rest: parsing, hooks, the pool) and `total` (from the request head's
 * first byte to the response head).
 */
function serverTiming(d: RecordDraft): Field {
  const total = d.firstByteMs ?? 0;
  const connect = d.connectMs;
  const sent = d.sentMs ?? total;
  const origin = total - sent;
  const proxy = Math.max(0, sent - (connect ?? 0));
  const parts = connect === null ? [] : [`connect;dur=${tenths(connect)}`];
  parts.push(`ttfb;dur=${tenths(origin)}`, `proxy;dur=${tenths(proxy)}`, `total;dur=${tenths(total)}`);
  return ["Server-Timing", parts.join(", ")];
}

/**
 * The authentication stage: Basic `Proxy-Authorization` against the
 * configured users; the user goes to the record. Wrong credentials from one
 * address in a row make the next 407s wait a little longer (bounded).
 *
 * @throws {ProxyAuthError} 407 with the challenge.
 */
function authenticate(ctx: ExchangeContext, client: ClientSide, fields: readonly Field[]): void {
  const presented = firstValue(fields, "proxy-authorization");
  const user = ctx.credentials!.check(presented);
  const address = clientHost(client);
  if (user === null) {
    // The first request of a client that was not asked yet carries nothing: not a failure.
    if (presented === null) throw new ProxyAuthError(ctx.authChallenge, "proxy-auth-required");
    const delayMs = ctx.authFailures.fail(address);
    ctx.logger.log("info", "proxy-auth-failed", { client: address, failures: ctx.authFailures.count(address) });
    throw new ProxyAuthError(ctx.authChallenge, "proxy-auth-failed", delayMs);
  }
  ctx.authFailures.succeed(address);
  client.draft.user = user;
}
