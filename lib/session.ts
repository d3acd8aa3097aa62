/**
 * One client connection from accept to close: the head-reading stage
 * (keep-alive, pipelining in order, head and idle deadlines), each request
 * handed to the exchange stages (forward.ts), errors to the error stage, and
 * the record stage that ends every exchange with one {@link ExchangeRecord}.
 *
 * @module
 */
import { deadlineIn } from "./clock.ts";
import { closeQuietly, writeThenClose } from "./conn.ts";
import { PrematureEofError, ProxyError } from "./errors.ts";
import { answerError, isSocketError } from "./error_stage.ts";
import type { ClientSide, ExchangeContext, ExchangeHooks, ResetWatch } from "./exchange_state.ts";
import { handleRequest } from "./forward.ts";
import { type HeadLimits, HeadParser, type RequestHead } from "./head.ts";
import type { ComposedHooks, ExchangeRecord, HookContext, HookError, HookName } from "./hooks.ts";
import type { UpstreamConn } from "./upstream.ts";
import { ConnReader } from "./reader.ts";
import { buildRecord, newDraft, type RecordDraft, resetDraft } from "./record.ts";
import { errorResponse } from "./respond.ts";
import { peer, type Swept } from "./sweeper.ts";
import { CountingWriter, type Writable } from "./writer.ts";

/** One client connection's state. */
export interface Session extends ClientSide, Swept {
  busy: boolean;
  /** Method of the request being handled ("" while waiting for a head). */
  method: string;
  /** Minor HTTP version of that request (1 while waiting for a head). */
  minor: number;
  /** Requests this connection has carried. */
  requests: number;
  /** Whether a byte of the awaited head has arrived. */
  headStarted: boolean;
  /** Set when the sweeper expired the head wait. */
  timedOut: boolean;
  /** The 408 being written after a head timeout (onError may be asynchronous). */
  timeoutAnswer: Promise<unknown> | null;
  done: Promise<void>;
  /** Numbers client connections for hooks and records. */
  readonly id: number;
  /** The client's address (made when a hook or record first needs it). */
  client: { hostname: string; port: number } | null;
  /** The address the client reached, when a PROXY header said (the balancer's front); else null. */
  local: { hostname: string; port: number } | null;
  /** Aborted when the connection ends or the proxy stops (made when a hook first reads `ctx.signal`). */
  hookAbort: AbortController | null;
  /** Set when the connection has ended (a signal made after that is aborted from the start). */
  ended: boolean;
  /** Set after an error answer: the close lingers (reads what the client still sends) instead of resetting. */
  lingerOnClose: boolean;
}

/** What sessions share with the server. */
export interface SessionHost {
  readonly ctx: ExchangeContext;
  readonly limits: HeadLimits;
  readonly headerTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly hooks: ComposedHooks | null;
}

const TIMEOUT = Symbol("timeout");
let nextId = 1;
/** Connections opened and exchanges started in this isolate (all proxies in it): the idle release's sign of activity. */
let activity = 0;

/** How many connections have opened and exchanges started in this isolate so far (lib/idle_release.ts). */
export function activityCount(): number {
  return activity;
}

/**
 * One client connection's state, as a class: every field is set in the
 * constructor in one order, so all sessions share one shape and the hot
 * path's property reads stay fast (an object literal with a getter and fields
 * added later measured 3% slower per request).
 */
class SessionState implements Session {
  readonly conn: Deno.TcpConn;
  readonly reader: ConnReader;
  readonly out: Writable;
  readonly draft: RecordDraft;
  hook: ExchangeHooks | null = null;
  stream: { cancel(): void } | null = null;
  hookDeadline = 0;
  hookName: HookName | null = null;
  hookExpire: ((error: HookError) => void) | null = null;
  hookWaiting: (() => void) | undefined = undefined;
  readonly id: number;
  client: { hostname: string; port: number } | null = null;
  local: { hostname: string; port: number } | null = null;
  hookAbort: AbortController | null = null;
  ended = false;
  lingerOnClose = false;
  timeoutAnswer: Promise<unknown> | null = null;
  finalHeadSent = false;
  upstream: Deno.Conn | null = null;
  pinned: UpstreamConn | null = null;
  busy = false;
  method = "";
  minor = 1;
  requests = 0;
  waitingHead = false;
  headStarted = false;
  deadline = 0;
  timedOut = false;
  inBody = false;
  activity = 0;
  responseDeadline = 0;
  responseTimedOut = false;
  resetWatch: ResetWatch | undefined = undefined;
  done: Promise<void> = DONE;

  constructor(conn: Deno.TcpConn, id: number, records: boolean, hooks: boolean) {
    this.conn = conn;
    // Clients mostly wait (for their first request, between requests): a waiting client holds no buffer.
    this.reader = new ConnReader(conn, 256 * 1024, 4096, true);
    // Bytes to the client are counted only when a record is made.
    this.out = records ? new CountingWriter(conn) : conn;
    this.draft = newDraft(records);
    this.id = id;
    // While a hook is pending nothing reads the client: a read started then notices a reset
    // and aborts ctx.signal. (Bytes it gets stay buffered for the exchange; a FIN is a half-close.)
    if (hooks) this.hookWaiting = () => watchClient(this);
  }

  get written(): number {
    return this.out instanceof CountingWriter ? this.out.written : 0;
  }
}

const DONE: Promise<void> = Promise.resolve();

/** A new session for an accepted connection. */
export function newSession(host: SessionHost, conn: Deno.TcpConn): Session {
  activity++;
  const hooks = host.hooks;
  const timed = (hooks?.onExchangeEnd ?? null) !== null || host.ctx.options.timingHeader;
  return new SessionState(conn, nextId++, timed, hooks !== null);
}

/** Serves requests on a connection until it closes, fails, or the proxy stops. */
export async function serveClient(host: SessionHost, s: Session): Promise<void> {
  const ctx = host.ctx;
  let first = true;
  while (!ctx.stopping) {
    // Per-request state: an error in this head must still be answered (the previous
    // response's head is not this one's), and HEAD-ness belongs to this request.
    s.finalHeadSent = false;
    s.method = "";
    s.minor = 1;
    resetDraft(s.draft);
    const inStart = s.reader.consumed;
    const outStart = s.written;
    let head: RequestHead | null;
    try {
      // The wait for a request happens in this frame (an idle connection holds no more);
      // a head that arrives whole is parsed without another await.
      try {
        let chunk: Uint8Array | null;
        try {
          chunk = await awaitRequest(host, s, first);
        } catch (error) {
          throw s.timedOut ? TIMEOUT : error;
        }
        const got = takeHead(host, s, first, chunk);
        head = got instanceof HeadParser ? await readHeadRest(s, got) : got;
      } finally {
        s.waitingHead = false; // the head stage is over, however it ended
      }
    } catch (error) {
      if (error === TIMEOUT) {
        if (s.timeoutAnswer !== null) await s.timeoutAnswer;
        // A connection that sent nothing was closed, not answered: no exchange, no record.
        if (s.headStarted) endExchange(host, s, null, inStart, outStart);
        return;
      }
      // A client that resets or closes while idle (no byte of a head) ends no exchange.
      if (!s.headStarted && isSocketError(error)) return;
      startHooks(host, s);
      s.lingerOnClose = await answerError(ctx, s, error);
      endExchange(host, s, null, inStart, outStart);
      return;
    }
    if (head === null) return;
    // The hook context is made when a request is there (an idle keep-alive connection holds none).
    startHooks(host, s);
    s.method = head.method;
    s.minor = head.minor;
    s.requests++;
    activity++;
    first = false;
    s.busy = true;
    try {
      const again = await handleRequest(ctx, s, head);
      if (!again) return;
    } catch (error) {
      s.lingerOnClose = await answerError(ctx, s, error);
      return;
    } finally {
      s.busy = false;
      s.inBody = false;
      s.responseDeadline = 0;
      endExchange(host, s, head, inStart, outStart);
    }
  }
}

/** Gives the exchange its hook context when a hook that takes one is set (not for onExchangeEnd alone). */
function startHooks(host: SessionHost, s: Session): void {
  const h = host.hooks;
  if (h === null || s.hook !== null) return;
  if (h.onRequest === null && h.onResponse === null && h.onConnect === null && h.onError === null) return;
  s.hook = { ctx: new SessionHookContext(s), req: null, responded: false };
}

/** A hook context whose address and signal are made on first use. */
class SessionHookContext implements HookContext {
  readonly locals: Record<string, unknown> = {};
  readonly #s: Session;
  constructor(s: Session) {
    this.#s = s;
  }
  get client(): { hostname: string; port: number } {
    return clientOf(this.#s);
  }
  get connectionId(): number {
    return this.#s.id;
  }
  get signal(): AbortSignal {
    const s = this.#s;
    if (s.hookAbort === null) {
      s.hookAbort = new AbortController();
      if (s.ended) s.hookAbort.abort();
    }
    return s.hookAbort.signal;
  }
}

/** The session's client address (made once). */
function clientOf(s: Session): { hostname: string; port: number } {
  if (s.client === null) {
    const a = s.conn.remoteAddr as Deno.NetAddr;
    s.client = Object.freeze({ hostname: a.hostname, port: a.port });
  }
  return s.client;
}

/** The record stage: one record per exchange or tunnel, to onExchangeEnd. */
function endExchange(
  host: SessionHost,
  s: Session,
  head: RequestHead | null,
  inStart: number,
  outStart: number,
): void {
  s.hook = null;
  const onExchangeEnd = host.hooks?.onExchangeEnd ?? null;
  if (onExchangeEnd === null) return;
  const record: ExchangeRecord = buildRecord(s.draft, {
    method: head?.method ?? "",
    target: head?.target ?? "",
    client: clientOf(s),
    connectionId: s.id,
    inStart,
    outStart,
    inNow: s.reader.consumed,
    outNow: s.written,
  });
  try {
    onExchangeEnd(record);
  } catch (error) {
    host.ctx.logger.log("error", "hook-failed", { hook: "onExchangeEnd", error: String(error) });
  }
}

/**
 * The head-reading stage, in three steps: {@link awaitRequest} (the wait for the
 * first bytes), {@link takeHead} (the first chunk) and, when the head is split
 * over reads, {@link readHeadRest}. A fresh connection gets the head timeout; a
 * kept-alive one the idle timeout until its first byte. The sweeper enforces the
 * deadline (no timer per request) and sets `timedOut`.
 */
function awaitRequest(host: SessionHost, s: Session, first: boolean): Promise<Uint8Array | null> {
  s.waitingHead = true;
  s.headStarted = false;
  s.deadline = deadlineIn(first ? host.headerTimeoutMs : host.idleTimeoutMs, host.ctx.tickMs);
  return s.reader.nextMessage();
}

/** The head from its first chunk; its parser when more bytes are needed; null when the client closed. */
function takeHead(
  host: SessionHost,
  s: Session,
  first: boolean,
  chunk: Uint8Array | null,
): RequestHead | HeadParser | null {
  if (s.timedOut) throw TIMEOUT;
  if (chunk === null) return null;
  s.headStarted = true;
  if (s.draft.timed) s.draft.startedAt = performance.now(); // the exchange's timings start here
  if (!first) s.deadline = deadlineIn(host.headerTimeoutMs, host.ctx.tickMs);
  const parser = new HeadParser("request", host.limits);
  const used = parser.push(chunk);
  if (!parser.complete) return parser;
  s.reader.unread(chunk.length - used);
  return parser.requestHead();
}

/** The rest of a head that did not arrive in one chunk. */
async function readHeadRest(s: Session, parser: HeadParser): Promise<RequestHead> {
  while (true) {
    let chunk: Uint8Array | null;
    try {
      chunk = await s.reader.next();
    } catch (error) {
      throw s.timedOut ? TIMEOUT : error;
    }
    if (s.timedOut) throw TIMEOUT;
    if (chunk === null) throw new PrematureEofError("Connection closed before the head was complete");
    const used = parser.push(chunk);
    if (parser.complete) {
      s.reader.unread(chunk.length - used);
      return parser.requestHead();
    }
  }
}

/** Head or idle deadline passed (called by the sweeper): 408 if part of a head arrived, then close. */
export function expireHead(host: SessionHost, s: Session): void {
  const logger = host.ctx.logger;
  s.timedOut = true;
  s.waitingHead = false;
  if (!s.headStarted) {
    // A fresh connection that sent nothing ran into the head timeout; a kept-alive one idled.
    logger.log("debug", s.requests === 0 ? "header-timeout" : "idle-timeout", { client: peer(s.conn) });
    closeQuietly(s.conn);
    return;
  }
  logger.log("info", "header-timeout", { client: peer(s.conn) });
  const error = new ProxyError("Request head not received in time", { status: 408, code: "header-timeout" });
  if (host.hooks === null || host.hooks.onError === null) {
    s.draft.status = 408;
    s.draft.error = error.code;
    const o = host.ctx.options;
    writeThenClose(s.conn, errorResponse(error, { proxyName: o.via, details: o.proxyStatusDetails }), s.out);
    return;
  }
  // onError may answer (and may take its time): the session's pending read ends at the close.
  startHooks(host, s);
  s.timeoutAnswer = answerError(host.ctx, s, error).finally(() => closeQuietly(s.conn));
}

/** Starts a client read if none is running, so a reset during an asynchronous hook aborts `ctx.signal`. */
function watchClient(s: Session): void {
  const reader = s.reader;
  // Not while a body streams: a request body pump may hold a view into the reader's buffer,
  // which a new read could swap out (and the writes then notice a reset anyway).
  if (s.inBody || reader.buffered > 0 || reader.eof || reader.reading) return;
  let read: Promise<number | null>;
  try {
    read = reader.prefetch(false); // a hook may be reading the request body from this reader
  } catch {
    // A read is already in flight (a body being read): its owner sees the reset.
    return;
  }
  read.catch(() => {
    s.ended = true;
    s.hookAbort?.abort();
  });
}
