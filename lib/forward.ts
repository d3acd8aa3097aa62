/**
 * One absolute-form exchange (RFC 9110 §7.6, RFC 9112): the request is checked,
 * rewritten to origin-form with hop-by-hop fields removed and `Via` added, sent
 * to the origin over a pooled connection, and the response is streamed back
 * with its framing re-chosen for the client.
 *
 * @module
 */
import { coarseNow, deadlineIn } from "./clock.ts";
import { parseDecimal } from "./ascii.ts";
import {
  ForbiddenError,
  LoopDetectedError,
  ParseError,
  PrematureEofError,
  ProxyError,
  UpstreamError,
  UpstreamTimeoutError,
} from "./errors.ts";
import { connectionTokens, type Field, getAll, has, nameIs, stripHopByHop, viaContains } from "./fields.ts";
import type { ChunkedLimits } from "./chunked.ts";
import { contentLength, type Framing, requestFraming, responseFraming } from "./framing.ts";
import { type HeadLimits, HeadParser, type RequestHead, type ResponseHead } from "./head.ts";
import type { Logger } from "./log.ts";
import type { ResolvedOptions } from "./options.ts";
import { type BodyReader, bodyReader, ConnReader, takeBufferedChunked } from "./reader.ts";
import { localResponse } from "./respond.ts";
import { httpDate, SCRATCH_BYTES, serializeHead } from "./serialize.ts";
import { giveBuffer, takeBuffer } from "./buffers.ts";
import { isValidHost, parseAbsoluteTarget, parseAuthority } from "./target.ts";
import { relay, type TunnelStats } from "./tunnel.ts";
import { closeQuietly, closeWriteQuietly } from "./conn.ts";
import { connectUpstream, type UpstreamConn, type UpstreamPool } from "./upstream.ts";
import { type BodyWriter, ChunkedBodyWriter, RawBodyWriter, writeAll } from "./writer.ts";

/** What an exchange needs from the server. */
export interface ExchangeContext {
  readonly options: ResolvedOptions;
  readonly limits: HeadLimits;
  /** Limits for response heads from origins (looser than for requests). */
  readonly responseLimits: HeadLimits;
  /** Chunked framing limits for request bodies (trailers use the request head limits). */
  readonly chunkedLimits: ChunkedLimits;
  /** Chunked framing limits for response bodies (trailers use the response head limits). */
  readonly responseChunkedLimits: ChunkedLimits;
  readonly pool: UpstreamPool;
  readonly logger: Logger;
  /** True once the server is shutting down: responses then close the connection. */
  readonly stopping: boolean;
  /** Aborted when the shutdown grace period is over: tunnels end as "aborted". */
  readonly abortSignal: AbortSignal;
  /** How often the server's sweeper ticks the coarse clock and checks deadlines (ms). */
  readonly tickMs: number;
}

/** The client side of an exchange. */
export interface ClientSide {
  readonly conn: Deno.TcpConn;
  readonly reader: ConnReader;
  /** Set once a final response head has been written (errors can no longer be reported). */
  finalHeadSent: boolean;
  /** The upstream connection in use, so a forced shutdown can close it. */
  upstream: Deno.Conn | null;
  /**
   * An upstream connection that carried connection-oriented authentication (NTLM,
   * Negotiate): it belongs to this client connection only, never to the shared pool.
   */
  pinned: UpstreamConn | null;
  /** True while a body is streaming either way (the body idle timeout applies). */
  inBody: boolean;
  /** `coarseNow()` (clock.ts) of the last body byte either way. */
  activity: number;
  /** Deadline (clock.ts `deadlineIn`) for the origin's response head; 0 when not waiting. */
  responseDeadline: number;
  /** Set by the server when `responseDeadline` passed (the upstream was closed). */
  responseTimedOut: boolean;
  /** Notices a client reset while a response head is awaited (made on first use). */
  resetWatch?: ResetWatch;
}

/**
 * The client's next read is started as soon as a request is out, so that a reset
 * while the origin is still working abandons the origin request at once. Its
 * handler lives as long as that read, possibly long after the exchange (an idle
 * keep-alive connection), so it is made once per connection and holds nothing
 * of the exchange but the upstream connection while the head is awaited.
 */
interface ResetWatch {
  /** The upstream connection to close on a client reset; null when not awaiting a head. */
  upstream: Deno.Conn | null;
  /** Set when the client reset while the head was awaited. */
  gone: boolean;
  readonly onError: () => void;
}

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
/** How long the rest of a request body is drained after an early answer before closing. */
const LINGER_MS = 1000;
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);
const ALLOW = "GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH";
/** Fields not echoed by TRACE (RFC 9110 §9.3.8: exclude sensitive data). */
const TRACE_HIDDEN = new Set(["authorization", "proxy-authorization", "cookie"]);

/**
 * Handles one request whose head has been read. Resolves to whether the client
 * connection may carry another request.
 *
 * @throws {ProxyError} before the final response head is sent; the caller answers with it.
 */
export async function handleRequest(ctx: ExchangeContext, client: ClientSide, head: RequestHead): Promise<boolean> {
  const fields = head.fields;
  // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, or with several.
  const hosts = getAll(fields, "host");
  if (hosts.length > 1) throw new ParseError("Cannot accept more than one Host field", "multiple-host");
  if (hosts.length === 0 && head.minor === 1) throw new ParseError("Missing Host field", "missing-host");
  if (hosts.length === 1 && !isValidHost(hosts[0])) throw new ParseError("Invalid Host field", "invalid-host");
  const framing = requestFraming(head);
  const tokens = connectionTokens(fields);
  // RFC 9112 §9.3: "A proxy server MUST NOT maintain a persistent connection with an
  // HTTP/1.0 client", whatever keep-alive it asks for.
  const persistent = !ctx.stopping && head.minor === 1 && !tokens.has("close");
  const hasBody = framing.kind === "chunked" || (framing.kind === "length" && framing.length > 0);

  if (head.method === "CONNECT") return await connectTunnel(ctx, client, head);
  const target = head.target;
  if (target === "*") {
    if (head.method !== "OPTIONS") throw new ParseError("Asterisk-form is only valid for OPTIONS", "invalid-target");
    // OPTIONS * addressed to the proxy itself (RFC 9110 §9.3.7).
    await writeLocal(client, localResponse(200, { fields: [["Allow", ALLOW]], close: !persistent || hasBody }));
    return persistent && !hasBody;
  }
  if (target.charCodeAt(0) === 0x2f) {
    throw new ParseError(
      "This is a proxy: send absolute-form requests (GET http://host/path) or CONNECT",
      "origin-form-to-proxy",
    );
  }
  const dest = parseAbsoluteTarget(target, head.method);
  if (viaContains(fields, ctx.options.via)) throw new LoopDetectedError();

  // RFC 9110 §7.6.2: Max-Forwards for TRACE and OPTIONS.
  let maxForwards = -1;
  if (head.method === "TRACE" || head.method === "OPTIONS") {
    const values = getAll(fields, "max-forwards");
    if (values.length > 0) maxForwards = parseDecimal(values[0]);
    if (maxForwards === 0) return answerMaxForwardsZero(client, head, persistent && !hasBody);
  }

  // RFC 9110 §7.8: forward an upgrade offer (Connection: upgrade + Upgrade) from an
  // HTTP/1.1 client on a body-less request; otherwise Upgrade is hop-by-hop and dropped.
  const upgrade = head.minor === 1 && tokens.has("upgrade") && !hasBody && has(fields, "upgrade");
  const out: Field[] = [["Host", dest.authority]];
  for (const f of stripHopByHop(fields, tokens, upgrade ? KEEP_UPGRADE : undefined)) {
    const name = f[0];
    if (nameIs(name, "host")) continue;
    if (maxForwards > 0 && nameIs(name, "max-forwards")) {
      out.push([name, String(maxForwards - 1)]);
      continue;
    }
    // RFC 9110 §10.1.1: a 100-continue expectation in HTTP/1.0 is ignored.
    if (head.minor === 0 && nameIs(name, "expect")) continue;
    out.push(f);
  }
  out.push(viaField(ctx, head.minor));
  if (upgrade) out.push(["Connection", "Upgrade"]);
  // A small body that has fully arrived goes out in the same write as the head. A whole
  // chunked body is validated before the origin is contacted (a bad one gets 400 and the
  // origin never sees the request) and, without trailers, sent with a Content-Length.
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
      if (whole !== null) inline = encodeChunked(whole.data, endToEndTrailers(whole.trailers, tokens));
    }
  }
  // Without a chunked body to the origin there is no trailer section to announce.
  if (framing.kind !== "chunked") dropField(out, "trailer");
  // The head is built in a recycled buffer, kept until no retry can need it again.
  const scratch = takeBuffer(SCRATCH_BYTES);
  const requestHead = serializeHead(`${head.method} ${dest.path} HTTP/1.1`, out, inline, scratch);
  const body = bodyReader(client.reader, inline !== null ? NO_BODY : framing, ctx.chunkedLimits);
  // RFC 9110 §9.2.2: only idempotent requests are retried, and only when the whole request
  // (head and any body) is in `requestHead` and can be sent again.
  const retryable = IDEMPOTENT.has(head.method) && body.done;
  const auth = hasConnectionAuth(getAll(fields, "authorization"));
  const key = `${dest.hostname}:${dest.port}`;
  try {
    for (let attempt = 0;; attempt++) {
      // A connection pinned to this client (NTLM/Negotiate) serves its requests to that origin.
      const pinned = attempt === 0 && client.pinned !== null && client.pinned.key === key ? client.pinned : null;
      if (pinned !== null) {
        client.pinned = null;
        pinned.reused = true; // it may have gone stale while idle: the retry rules apply
      }
      const up = pinned ?? (attempt === 0 ? ctx.pool.take(key) : null) ?? await ctx.pool.open(dest.hostname, dest.port);
      client.upstream = up.conn;
      try {
        const plan: Plan = {
          req: head,
          persistent,
          requestHead,
          framing,
          body,
          upgrade,
          canRetry: retryable && up.reused,
          pin: auth || pinned !== null,
          tokens,
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

/** One attempt at sending a prepared request over one upstream connection. */
interface Plan {
  /** The client's request head. */
  req: RequestHead;
  /** Whether the client asked to keep its connection. */
  persistent: boolean;
  /** The serialized head for the origin. */
  requestHead: Uint8Array;
  /** The request body's framing and reader. */
  framing: Framing;
  body: BodyReader;
  /** Whether an upgrade was offered to the origin. */
  upgrade: boolean;
  /** Whether a failure before any response byte may be retried on a fresh connection. */
  canRetry: boolean;
  /** Whether the connection carries connection-oriented auth and stays with this client. */
  pin: boolean;
  /** The request's `Connection` tokens (lower-cased). */
  tokens: ReadonlySet<string>;
}

async function exchange(
  ctx: ExchangeContext,
  client: ClientSide,
  up: UpstreamConn,
  plan: Plan,
): Promise<boolean | typeof RETRY> {
  const { req, persistent, requestHead, framing, body, upgrade, canRetry } = plan;
  try {
    await writeAll(up.conn, requestHead);
  } catch (error) {
    closeQuietly(up.conn);
    if (canRetry) return RETRY;
    throw new UpstreamError("Cannot send the request to the origin", "upstream-write-failed", error);
  }

  // The request body streams while the response is awaited (100-continue, early answers).
  let clientError: unknown = null;
  let upstreamWriteFailed = false;
  let discard = false; // after an early answer: drain the client's body instead of forwarding it
  let headSeen = false;
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
  /** Why the response read failed when it was our doing: the client side or the deadline. */
  const throwIfAbandoned = () => {
    if (clientError !== null) throw clientError;
    if (watch.gone) throw new PrematureEofError("The client reset the connection while waiting for the origin");
    if (client.responseTimedOut) {
      throw new UpstreamTimeoutError("Timed out waiting for the origin's response", "upstream-response-timeout");
    }
  };
  client.inBody = true;
  client.activity = coarseNow();
  const pump = body.done ? null : (async () => {
    const writer: BodyWriter = framing.kind === "chunked" ? new ChunkedBodyWriter(up.conn) : new RawBodyWriter(up.conn);
    while (true) {
      let data: Uint8Array | null;
      try {
        data = await body.next();
        client.activity = coarseNow();
      } catch (error) {
        // The request cannot be completed: abort the upstream side too.
        clientError = error;
        closeQuietly(up.conn);
        return;
      }
      try {
        if (data === null) {
          await writer.end(endToEndTrailers(body.trailers, plan.tokens));
          break;
        }
        if (discard) continue;
        await writer.write(data);
        client.activity = coarseNow();
      } catch {
        // The origin stopped reading (it may have answered early); its response decides.
        upstreamWriteFailed = true;
        return;
      }
    }
    if (!headSeen) startResponseTimer();
  })();
  if (pump === null) startResponseTimer();

  let res: ResponseHead;
  try {
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
        if (canRetry && !parser.started) return RETRY;
        throw new UpstreamError(
          parser.started ? "The origin closed the connection mid-response" : "The origin reset the connection",
          parser.started ? "upstream-truncated-head" : "upstream-reset",
          error,
        );
      }
      if (!got) {
        closeQuietly(up.conn);
        throwIfAbandoned();
        if (canRetry) return RETRY;
        throw new UpstreamError("The origin closed the connection without a response", "upstream-closed");
      }
      res = parser.responseHead();
      if (res.status >= 200) break;
      if (res.status === 101) {
        if (!upgrade) {
          closeQuietly(up.conn);
          throw new UpstreamError("The origin switched protocols without being asked", "upstream-unexpected-101");
        }
        break;
      }
      // RFC 9110 §15.2: relay 1xx, but never to an HTTP/1.0 client.
      if (req.minor === 1) {
        const interim = stripHopByHop(res.fields, connectionTokens(res.fields));
        interim.push(viaField(ctx, res.minor));
        await writeOrDrop(client.conn, serializeHead(`HTTP/1.1 ${res.status} ${res.reason}`, interim), up.conn);
      }
    }
  } finally {
    headSeen = true; // the pump must not start a timer from now on
    watch.upstream = null; // the exchange moved on: the connection may be pooled for others now
    client.responseDeadline = 0;
    client.inBody = true;
    client.activity = coarseNow();
  }

  if (res.status === 101) return await switchProtocols(ctx, client, res, up);

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
  const early = !body.done;
  let clientClose = !persistent || early || ctx.stopping;
  const fields = stripHopByHop(res.fields, resTokens);
  fields.push(viaField(ctx, res.minor));
  // RFC 9110 §6.6.1: a recipient with a clock MUST add Date if it is missing.
  if (!has(res.fields, "date")) fields.push(["Date", httpDate()]);
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
    await writeOrDrop(
      client.conn,
      serializeHead(`HTTP/1.1 ${res.status} ${res.reason}`, fields, inline, scratch),
      up.conn,
    );
  } finally {
    giveBuffer(scratch);
  }
  client.finalHeadSent = true;

  const resBody = bodyReader(up.reader, rest, ctx.responseChunkedLimits);
  const writer: BodyWriter = chunkedToClient ? new ChunkedBodyWriter(client.conn) : new RawBodyWriter(client.conn);
  // (A body that went out whole with the head needs no loop: an identity writer has no end.)
  while (!resBody.done || chunkedToClient) {
    let data: Uint8Array | null;
    try {
      data = await resBody.next();
      client.activity = coarseNow();
    } catch (error) {
      // After the head is on the wire a failure can only abort: never fake a complete body.
      closeQuietly(up.conn);
      ctx.logger.log("warn", "upstream-body-failed", { origin: up.key, error: describe(error) });
      return false;
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
      return false;
    }
  }

  if (early) {
    // RFC 9112 §9.6: the response said "close", so close now: end our sending side at
    // once, drain what the client still sends for a moment (a full close with unread
    // data would reset the connection and could destroy the response), then close.
    discard = true;
    closeQuietly(up.conn);
    await closeWriteQuietly(client.conn);
    await settleWithin(pump, LINGER_MS);
    return false;
  }
  if (pump !== null) await pump;
  if (clientError !== null || upstreamWriteFailed) {
    closeQuietly(up.conn);
    return false;
  }
  const reusable = res.minor === 1 && !resTokens.has("close") && resFraming.kind !== "close";
  // NTLM and Negotiate authenticate the connection, not the request (RFC 4559 §4): such a
  // connection is kept for this client alone and never handed to another one.
  const pin = plan.pin || (res.status === 401 && hasConnectionAuth(getAll(res.fields, "www-authenticate")));
  if (!reusable) closeQuietly(up.conn);
  else if (pin && !clientClose) {
    if (client.pinned !== null && client.pinned !== up) closeQuietly(client.pinned.conn);
    client.pinned = up;
  } else if (pin) closeQuietly(up.conn);
  else ctx.pool.release(up);
  return !clientClose;
}

/** Whether any credentials or challenges use a connection-oriented scheme (NTLM, Negotiate). */
function hasConnectionAuth(values: readonly string[]): boolean {
  for (const value of values) if (/(?:^|,)\s*(?:ntlm|negotiate)\b/i.test(value)) return true;
  return false;
}

/** Relays a 101 response, then bytes both ways (RFC 9110 §15.2.2). */
async function switchProtocols(
  ctx: ExchangeContext,
  client: ClientSide,
  res: ResponseHead,
  up: UpstreamConn,
): Promise<boolean> {
  const tokens = connectionTokens(res.fields);
  const fields = stripHopByHop(res.fields, tokens, KEEP_UPGRADE);
  fields.push(viaField(ctx, res.minor));
  fields.push(["Connection", "Upgrade"]);
  await writeOrDrop(client.conn, serializeHead(`HTTP/1.1 101 ${res.reason}`, fields), up.conn);
  client.finalHeadSent = true;
  client.inBody = false; // the tunnel has its own idle timeout; the body timeout no longer applies
  const stats = await relay(client, up, {
    target: up.key,
    idleTimeoutMs: ctx.options.tunnelIdleTimeoutMs,
    halfClosedIdleMs: ctx.options.bodyTimeoutMs,
    signal: ctx.abortSignal,
  });
  reportTunnel(ctx, stats, "upgrade");
  return false;
}

/**
 * CONNECT (RFC 9110 §9.3.6): authority-form target, port policy, then a 200 and
 * a byte relay. Bytes the client sent after the head (early TLS data) are
 * relayed first, never lost.
 */
async function connectTunnel(ctx: ExchangeContext, client: ClientSide, head: RequestHead): Promise<boolean> {
  const target = head.target;
  if (target.startsWith("/") || target.includes("/") || target.includes("@") || target === "*") {
    throw new ParseError("CONNECT needs an authority-form target (host:port)", "invalid-connect-target");
  }
  const colon = target.lastIndexOf(":");
  if (colon === -1 || colon === target.length - 1 || (target.startsWith("[") && colon < target.indexOf("]"))) {
    throw new ParseError("CONNECT needs an authority-form target with a port (host:port)", "invalid-connect-target");
  }
  const { hostname, port } = parseAuthority(target, 0);
  const ports = ctx.options.connectPorts;
  if (ports !== "*" && !ports.includes(port)) {
    throw new ForbiddenError("CONNECT to this port is not allowed by the proxy's policy", "connect-port-denied");
  }
  if (viaContains(head.fields, ctx.options.via)) throw new LoopDetectedError();
  const conn = await connectUpstream(hostname, port, ctx.options.connectTimeoutMs);
  client.upstream = conn;
  try {
    try {
      await writeAll(client.conn, ESTABLISHED);
    } catch {
      // The client left before the tunnel opened: drop the origin side too.
      closeQuietly(conn);
      return false;
    }
    client.finalHeadSent = true;
    const origin = { conn, reader: new ConnReader(conn, 65536) };
    const stats = await relay(client, origin, {
      target,
      idleTimeoutMs: ctx.options.tunnelIdleTimeoutMs,
      halfClosedIdleMs: ctx.options.bodyTimeoutMs,
      signal: ctx.abortSignal,
    });
    reportTunnel(ctx, stats, "connect");
    return false;
  } finally {
    client.upstream = null;
  }
}

function reportTunnel(ctx: ExchangeContext, stats: TunnelStats, kind: "connect" | "upgrade"): void {
  ctx.logger.log(stats.end === "idle-timeout" ? "info" : "debug", "tunnel-end", { kind, ...stats });
  ctx.options.onTunnelEnd?.(stats);
}

const ESTABLISHED = new TextEncoder().encode("HTTP/1.1 200 Connection established\r\n\r\n");
const KEEP_UPGRADE: ReadonlySet<string> = new Set(["upgrade"]);

/** A whole chunked body: one chunk (if any data), the last chunk and the trailers. */
function encodeChunked(data: Uint8Array, trailers: readonly Field[]): Uint8Array {
  const size = data.length > 0 ? `${data.length.toString(16)}\r\n` : "";
  const tail = serializeHead("0", trailers);
  const out = new Uint8Array(size.length + data.length + (data.length > 0 ? 2 : 0) + tail.length);
  let p = 0;
  for (let i = 0; i < size.length; i++) out[p++] = size.charCodeAt(i);
  out.set(data, p);
  p += data.length;
  if (data.length > 0) {
    out[p++] = 13;
    out[p++] = 10;
  }
  out.set(tail, p);
  return out;
}

/**
 * Trailer fields worth forwarding: drop hop-by-hop and framing fields, and those
 * named by the message's `Connection` (RFC 9110 §7.6.1 applies to trailers too).
 */
function endToEndTrailers(trailers: readonly Field[], connection: ReadonlySet<string>): Field[] {
  if (trailers.length === 0) return [];
  const out = stripHopByHop(trailers, connection);
  dropField(out, "host");
  dropField(out, "trailer");
  return out;
}

let viaCache: { pseudonym: string; fields: readonly Field[] } | null = null;

/** The `Via` field this proxy adds for a message received as HTTP/1.`minor` (RFC 9110 §7.6.3). */
function viaField(ctx: ExchangeContext, minor: number): Field {
  const pseudonym = ctx.options.via;
  if (viaCache === null || viaCache.pseudonym !== pseudonym) {
    viaCache = { pseudonym, fields: [["Via", `1.0 ${pseudonym}`], ["Via", `1.1 ${pseudonym}`]] };
  }
  return viaCache.fields[minor] as Field;
}

/** Writes to the client; if the client is gone, the origin side is dropped too, then the error rises. */
async function writeOrDrop(conn: Deno.Conn, bytes: Uint8Array, upstream: Deno.Conn): Promise<void> {
  try {
    await writeAll(conn, bytes);
  } catch (error) {
    closeQuietly(upstream);
    throw error;
  }
}

/** Removes every field called `name` (lower-case) in place. */
function dropField(fields: Field[], name: string): void {
  for (let i = fields.length - 1; i >= 0; i--) if (nameIs(fields[i][0], name)) fields.splice(i, 1);
}

/** Waits for `promise` or `ms`, whichever is first (the timer is always cleared). */
async function settleWithin(promise: Promise<unknown> | null, ms: number): Promise<void> {
  if (promise === null) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([promise, new Promise((resolve) => timer = setTimeout(resolve, ms))]);
  } finally {
    clearTimeout(timer);
  }
}

async function answerMaxForwardsZero(client: ClientSide, head: RequestHead, keepAlive: boolean): Promise<boolean> {
  if (head.method === "OPTIONS") {
    await writeLocal(client, localResponse(200, { fields: [["Allow", ALLOW]], close: !keepAlive }));
    return keepAlive;
  }
  // TRACE: echo the request as received (RFC 9110 §9.3.8), minus credentials.
  let echo = `${head.method} ${head.target} HTTP/1.${head.minor}\r\n`;
  for (const [name, value] of head.fields) {
    if (!TRACE_HIDDEN.has(name.toLowerCase())) echo += `${name}: ${value}\r\n`;
  }
  echo += "\r\n";
  await writeLocal(client, localResponse(200, { body: echo, contentType: "message/http", close: !keepAlive }));
  return keepAlive;
}

async function writeLocal(client: ClientSide, bytes: Uint8Array): Promise<void> {
  client.finalHeadSent = true;
  await writeAll(client.conn, bytes);
}

/** A short description of an error for logs. */
export function describe(error: unknown): string {
  if (error instanceof ProxyError) return error.code;
  if (error instanceof Error) return error.name;
  return String(error);
}
