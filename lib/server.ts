/**
 * The only module that listens: the accept loop, one session per client
 * connection (keep-alive, pipelining in order, head timeouts), and graceful
 * shutdown.
 *
 * @module
 */
import { coarseNow, deadlineIn, tick } from "./clock.ts";
import { describe, PrematureEofError, ProxyError } from "./errors.ts";
import { handleRequest } from "./forward.ts";
import type { ClientSide, ExchangeContext } from "./exchange_state.ts";
import { type HeadLimits, HeadParser, type RequestHead } from "./head.ts";
import { writeAnswer } from "./answer.ts";
import { normalizeReply } from "./hook_messages.ts";
import { callHook, expireHook } from "./hook_runner.ts";
import { composeHooks, HookError, isThenable } from "./hooks.ts";
import { buildRecord, newDraft, resetDraft } from "./record.ts";
import { consoleLogger, type Logger } from "./log.ts";
import { type ProxyOptions, type ResolvedOptions, resolveOptions } from "./options.ts";
import { ConnReader } from "./reader.ts";
import { errorResponse, localResponse } from "./respond.ts";
import { DEFAULT_CHUNKED_LIMITS } from "./chunked.ts";
import { closeQuietly, writeThenClose } from "./conn.ts";
import { UpstreamPool } from "./upstream.ts";
import { type Writable, writeAll } from "./writer.ts";

/** A running proxy. */
export interface ProxyHandle {
  /** The address the proxy listens on (with the real port when 0 was asked). */
  readonly addr: Deno.NetAddr;
  /** Settles when the proxy has stopped and every connection is closed. */
  readonly finished: Promise<void>;
  /**
   * Stops accepting, lets in-flight exchanges finish for up to `graceMs`
   * (default 10000), then closes whatever is left. Resolves when stopped.
   */
  shutdown(graceMs?: number): Promise<void>;
  /** Number of open client connections. */
  readonly connections: number;
}

interface Session extends ClientSide {
  busy: boolean;
  /** Method of the request being handled ("" while waiting for a head). */
  method: string;
  /** Requests this connection has carried. */
  requests: number;
  /** Waiting for a request head (the head or idle deadline applies). */
  waitingHead: boolean;
  /** Whether a byte of the awaited head has arrived. */
  headStarted: boolean;
  /** Deadline for the awaited head (clock.ts `deadlineIn`). */
  deadline: number;
  /** Set when the sweeper expired the head wait. */
  timedOut: boolean;
  /** The 408 being written after a head timeout (onError may be asynchronous). */
  timeoutAnswer: Promise<void> | null;
  done: Promise<void>;
  /** Numbers client connections for hooks and records. */
  readonly id: number;
  /** The client's address (made only when hooks are set). */
  client: { hostname: string; port: number } | null;
  /** Aborted when the connection ends or the proxy stops (made only when hooks are set). */
  hookAbort: AbortController | null;
}

const TIMEOUT = Symbol("timeout");

/**
 * Starts a forward HTTP/1.1 proxy listening on `options.hostname:options.port`
 * (RFC 9110 §7.6 intermediary rules, RFC 9112 message syntax). Listening is
 * synchronous: when this returns, `addr` holds the bound address.
 *
 * @param options Listening address, limits, timeouts and policy; see {@link ProxyOptions} for defaults.
 * @returns A handle with the bound address, a graceful `shutdown()` and `finished`.
 * @throws {TypeError} when an option is invalid (for example a `via` that is not a token).
 * @throws {Deno.errors.AddrInUse} when the port is taken; other `Deno.listen` errors as they come.
 *
 * @example
 * ```ts
 * const proxy = startProxy({ port: 0, connectPorts: [443, 8443] });
 * console.log(`http_proxy=http://127.0.0.1:${proxy.addr.port}`);
 * await proxy.shutdown(5_000);
 * ```
 */
export function startProxy(options: ProxyOptions = {}): ProxyHandle {
  const opts: ResolvedOptions = resolveOptions(options);
  const logger: Logger = opts.logger ?? consoleLogger("warn");
  const listener = opts.reusePort
    ? Deno.listen({ hostname: opts.hostname, port: opts.port, transport: "tcp", reusePort: true })
    : Deno.listen({ hostname: opts.hostname, port: opts.port, transport: "tcp" });
  const limits: HeadLimits = {
    maxRequestLineBytes: opts.maxRequestLineBytes,
    maxHeadBytes: opts.maxHeadBytes,
    maxFields: opts.maxFields,
  };
  // Responses legitimately carry more fields (many Set-Cookie lines): looser, still bounded.
  const responseLimits: HeadLimits = {
    maxRequestLineBytes: Math.max(opts.maxRequestLineBytes, 8192),
    maxHeadBytes: Math.max(opts.maxHeadBytes, 256 * 1024),
    maxFields: Math.max(opts.maxFields, 1000),
  };
  const pool = new UpstreamPool({
    connectTimeoutMs: opts.connectTimeoutMs,
    maxIdlePerOrigin: opts.maxIdlePerOrigin,
    maxIdle: 4096,
    idleTimeoutMs: opts.upstreamIdleTimeoutMs,
    bufferBytes: 256 * 1024,
  });
  const sessions = new Set<Session>();
  const abort = new AbortController();
  const hooks = composeHooks(opts.hooks);
  const onExchangeEnd = hooks?.onExchangeEnd ?? null;
  let nextId = 1;
  // Head, idle, response and body timeouts: one sweeper for all sessions, no timer per
  // request. It ticks the coarse clock (clock.ts) that timestamps use.
  const sweepMs = Math.max(
    25,
    Math.min(
      1000,
      Math.min(
        opts.bodyTimeoutMs,
        opts.headerTimeoutMs,
        opts.idleTimeoutMs,
        opts.responseTimeoutMs,
        hooks !== null && opts.hookTimeoutMs > 0 ? opts.hookTimeoutMs : Infinity,
      ) / 4,
    ),
  );
  const ctx: ExchangeContext & { stopping: boolean } = {
    options: opts,
    limits,
    responseLimits,
    chunkedLimits: { maxChunkLineBytes: DEFAULT_CHUNKED_LIMITS.maxChunkLineBytes, trailer: limits },
    responseChunkedLimits: { maxChunkLineBytes: DEFAULT_CHUNKED_LIMITS.maxChunkLineBytes, trailer: responseLimits },
    pool,
    logger,
    hooks,
    stopping: false,
    abortSignal: abort.signal,
    tickMs: sweepMs,
    hookTimeoutMs: opts.hookTimeoutMs,
  };

  const perClient = new Map<string, number>();
  const acceptLoop = (async () => {
    while (!ctx.stopping) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (error) {
        // shutdown() closed the listener: accept fails with BadResource.
        if (ctx.stopping || error instanceof Deno.errors.BadResource) return;
        // A client that reset before we accepted it (ECONNABORTED, ENOTCONN) or fd
        // exhaustion (EMFILE) ends that accept, never the proxy.
        logger.log("warn", "accept-failed", { error: describe(error) });
        if (!(error instanceof Deno.errors.ConnectionAborted || error instanceof Deno.errors.NotConnected)) {
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        continue;
      }
      try {
        admit(conn);
      } catch (error) {
        // The socket died between accept and setup (for example reset already): drop it.
        logger.log("debug", "accept-setup-failed", { error: describe(error) });
        closeQuietly(conn);
      }
    }
  })();

  function admit(conn: Deno.TcpConn): void {
    conn.setNoDelay(true); // responses are written whole: never wait for Nagle
    const address = (conn.remoteAddr as Deno.NetAddr).hostname;
    const fromClient = perClient.get(address) ?? 0;
    if (sessions.size >= opts.maxConnections || fromClient >= opts.maxConnectionsPerClient) {
      refuse(conn, sessions.size >= opts.maxConnections ? "max-connections" : "max-connections-per-client");
      return;
    }
    perClient.set(address, fromClient + 1);
    const session = newSession(conn);
    sessions.add(session);
    session.done = runSession(session, address);
  }

  /**
   * A session from start to end, with its cleanup: one async frame for the whole
   * lifetime (a `.catch().finally().then()` chain cost three promises and five
   * closures per idle connection).
   */
  async function runSession(s: Session, address: string): Promise<void> {
    try {
      await serveClient(s);
    } catch (error) {
      logger.log("error", "session-crashed", { error: describe(error) });
    } finally {
      closeQuietly(s.conn);
      s.reader.dispose(); // its buffers go back for the next connection
      if (s.pinned !== null) closeQuietly(s.pinned.conn);
      s.hookAbort?.abort();
      sessions.delete(s);
      const left = (perClient.get(address) ?? 1) - 1;
      if (left > 0) perClient.set(address, left);
      else perClient.delete(address);
    }
  }

  /** Over a connection limit: answer 503 with Retry-After and close, never queue. */
  function refuse(conn: Deno.TcpConn, why: string): void {
    logger.log("warn", why, { client: peer(conn) });
    const bytes = localResponse(503, {
      body: "Too many connections to the proxy\n",
      close: true,
      fields: [["Retry-After", "1"]],
    });
    writeThenClose(conn, bytes);
  }

  // Body activity is stamped with the coarse clock, which this sweeper refreshes: a stamp
  // can be up to one interval old, so that much slack keeps the timeout from firing early.
  const bodyIdleMs = opts.bodyTimeoutMs + sweepMs;
  tick();
  const sweeper = setInterval(
    () => {
      const now = tick();
      for (const s of sessions) {
        if (s.hookDeadline !== 0) expireHook(s, now);
        if (s.waitingHead && now > s.deadline) expireHead(s);
        else if (s.responseDeadline > 0 && now > s.responseDeadline) {
          logger.log("info", "response-timeout", { client: peer(s.conn) });
          s.responseDeadline = 0;
          s.responseTimedOut = true;
          if (s.upstream) closeQuietly(s.upstream);
        } else if (s.inBody && now - s.activity > bodyIdleMs) {
          logger.log("info", "body-timeout", { client: peer(s.conn) });
          s.inBody = false;
          closeQuietly(s.conn);
          if (s.upstream) closeQuietly(s.upstream);
        }
      }
    },
    sweepMs,
  );
  Deno.unrefTimer(sweeper);

  function newSession(conn: Deno.TcpConn): Session {
    const session = {
      conn,
      reader: new ConnReader(conn, 256 * 1024),
      out: conn as Writable,
      written: 0,
      draft: newDraft(onExchangeEnd !== null),
      hook: null,
      hookDeadline: 0,
      hookName: null,
      hookExpire: null,
      id: nextId++,
      client: null,
      hookAbort: null,
      timeoutAnswer: null,
      finalHeadSent: false,
      upstream: null,
      pinned: null,
      busy: false,
      method: "",
      requests: 0,
      waitingHead: false,
      headStarted: false,
      deadline: 0,
      timedOut: false,
      inBody: false,
      activity: 0,
      responseDeadline: 0,
      responseTimedOut: false,
      resetWatch: undefined,
      done: Promise.resolve(),
    } as Session;
    if (hooks !== null) {
      const a = conn.remoteAddr as Deno.NetAddr;
      session.client = Object.freeze({ hostname: a.hostname, port: a.port });
      session.hookAbort = new AbortController();
    }
    // Bytes to the client are counted only when a record is made (one promise less per write otherwise).
    if (onExchangeEnd !== null) {
      (session as { out: Writable }).out = {
        write(p: Uint8Array): Promise<number> {
          return conn.write(p).then((n) => {
            session.written += n;
            return n;
          });
        },
      };
    }
    return session;
  }

  async function serveClient(s: Session): Promise<void> {
    let first = true;
    while (!ctx.stopping) {
      // Per-request state: an error in this head must still be answered (the previous
      // response's head is not this one's), and HEAD-ness belongs to this request.
      s.finalHeadSent = false;
      s.method = "";
      resetDraft(s.draft);
      if (hooks !== null) s.hook = { ctx: hookContext(s), req: null };
      const inStart = s.reader.consumed;
      const outStart = s.written;
      let head: RequestHead | null;
      try {
        head = await readRequestHead(s, first);
      } catch (error) {
        if (error === TIMEOUT) {
          if (s.timeoutAnswer === null) return;
          await s.timeoutAnswer;
        } else await answerError(s, error);
        endExchange(s, null, inStart, outStart);
        return;
      }
      if (head === null) return;
      if (s.draft.timed) s.draft.startedAt = performance.now();
      s.method = head.method;
      s.requests++;
      first = false;
      s.busy = true;
      try {
        const again = await handleRequest(ctx, s, head);
        if (!again) return;
      } catch (error) {
        await answerError(s, error);
        return;
      } finally {
        s.busy = false;
        s.inBody = false;
        s.responseDeadline = 0;
        endExchange(s, head, inStart, outStart);
      }
    }
  }

  function hookContext(s: Session) {
    return { client: s.client!, connectionId: s.id, locals: {}, signal: s.hookAbort!.signal };
  }

  /** The record stage: one record per exchange or tunnel, to onExchangeEnd. */
  function endExchange(s: Session, head: RequestHead | null, inStart: number, outStart: number): void {
    s.hook = null;
    if (onExchangeEnd === null) return;
    const record = buildRecord(s.draft, {
      method: head?.method ?? "",
      target: head?.target ?? "",
      client: s.client!,
      connectionId: s.id,
      inStart,
      outStart,
      inNow: s.reader.consumed,
      outNow: s.written,
    });
    try {
      onExchangeEnd(record);
    } catch (error) {
      logger.log("error", "hook-failed", { hook: "onExchangeEnd", error: String(error) });
    }
  }

  async function readRequestHead(s: Session, first: boolean): Promise<RequestHead | null> {
    const parser = new HeadParser("request", limits);
    // A fresh connection gets the head timeout; a kept-alive one the idle timeout
    // until its first byte. The sweeper enforces the deadline (no timer per request).
    s.waitingHead = true;
    s.headStarted = false;
    s.deadline = deadlineIn(first ? opts.headerTimeoutMs : opts.idleTimeoutMs, sweepMs);
    try {
      while (true) {
        let chunk: Uint8Array | null;
        try {
          chunk = await s.reader.next();
        } catch (error) {
          if (s.timedOut) throw TIMEOUT;
          throw error;
        }
        if (s.timedOut) throw TIMEOUT;
        if (chunk === null) {
          if (parser.started) throw new PrematureEofError("Connection closed before the head was complete");
          return null;
        }
        if (!s.headStarted) {
          s.headStarted = true;
          if (!first) s.deadline = deadlineIn(opts.headerTimeoutMs, sweepMs);
        }
        const used = parser.push(chunk);
        if (parser.complete) {
          s.reader.unread(chunk.length - used);
          return parser.requestHead();
        }
      }
    } finally {
      s.waitingHead = false;
    }
  }

  /** Head or idle deadline passed: 408 if part of a head arrived, then close. */
  function expireHead(s: Session): void {
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
    if (hooks === null || hooks.onError === null) {
      s.draft.status = 408;
      s.draft.error = error.code;
      writeThenClose(s.conn, errorResponse(error));
      return;
    }
    // onError may answer (and may take its time): the session's pending read ends at the close.
    s.timeoutAnswer = answerError(s, error).finally(() => closeQuietly(s.conn));
  }

  async function answerError(s: Session, error: unknown): Promise<void> {
    if (!(error instanceof ProxyError)) {
      // Socket errors (reset, broken pipe) end the session without a response.
      if (isSocketError(error)) {
        s.draft.error ??= "client-gone";
        return;
      }
      logger.log("error", "internal-error", { error: String(error) });
    } else if (error instanceof HookError) {
      logger.log("error", "hook-failed", { code: error.code, error: String(error.cause ?? error.message) });
    } else if (error.status >= 500) {
      logger.log("info", "upstream-error", { code: error.code });
    }
    const failure = error instanceof ProxyError
      ? error
      : new ProxyError("Internal proxy error", { status: 500, code: "internal-error", cause: error });
    s.draft.error = failure.code;
    // An incomplete request (the client half-closed mid-head or mid-body) still gets its
    // 400 if the client is listening (RFC 9112 §8); a reset client makes the write fail.
    if (s.finalHeadSent) return;
    if (hooks !== null && hooks.onError !== null && s.hook !== null && await answerWithHook(s, failure)) return;
    s.draft.status = failure.status;
    await tryWrite(s, errorResponse(error, true, s.method === "HEAD"));
  }

  /** Lets onError answer an error; resolves to whether it did (else the proxy's own answer goes out). */
  async function answerWithHook(s: Session, error: ProxyError): Promise<boolean> {
    const hook = s.hook!;
    const onError = hooks!.onError!;
    try {
      const result = callHook(s, ctx, "onError", () => onError(error, hook.ctx, hook.req ?? undefined));
      const reply = isThenable(result) ? await result : result;
      if (reply === undefined || reply === null) return false;
      const answer = normalizeReply(reply);
      if (answer === null) throw new HookError("onError", "invalid");
      await writeAnswer(s.out, answer, {
        method: s.method,
        minor: 1,
        close: true,
        hook: "onError",
        touch: () => s.activity = coarseNow(),
        headSent: (status) => {
          s.finalHeadSent = true;
          s.draft.status = status;
        },
      });
      return true;
    } catch (failure) {
      // A failing onError must not cost the client its answer: the proxy's own goes out.
      logger.log("error", "hook-failed", { code: describe(failure), error: String(failure) });
      return s.finalHeadSent;
    }
  }

  async function tryWrite(s: Session, bytes: Uint8Array): Promise<void> {
    try {
      await writeAll(s.out, bytes);
    } catch {
      // The client is gone; there is no one left to tell.
    }
  }

  let stopPromise: Promise<void> | null = null;
  const stopped = Promise.withResolvers<void>();
  const finished = (async () => {
    await acceptLoop;
    await stopped.promise;
  })();

  function shutdown(graceMs = 10_000): Promise<void> {
    if (stopPromise) return stopPromise;
    ctx.stopping = true;
    stopPromise = (async () => {
      try {
        listener.close();
      } catch {
        // Already closed.
      }
      await acceptLoop;
      // Idle sessions close now; busy ones finish their exchange (they see `stopping`).
      for (const s of sessions) if (!s.busy) closeQuietly(s.conn);
      let graceTimer: ReturnType<typeof setTimeout> | undefined;
      const grace = new Promise<void>((resolve) => graceTimer = setTimeout(resolve, graceMs));
      await Promise.race([Promise.all([...sessions].map((s) => s.done)), grace]);
      clearTimeout(graceTimer);
      if (sessions.size > 0) logger.log("warn", "grace-expired", { closing: sessions.size });
      abort.abort();
      for (const s of sessions) {
        s.hookAbort?.abort();
        closeQuietly(s.conn);
        if (s.upstream) closeQuietly(s.upstream);
      }
      await Promise.all([...sessions].map((s) => s.done));
      pool.close();
      clearInterval(sweeper);
      stopped.resolve();
    })();
    return stopPromise;
  }

  opts.signal?.addEventListener("abort", () => shutdown(), { once: true });

  return {
    addr: listener.addr as Deno.NetAddr,
    finished,
    shutdown,
    get connections() {
      return sessions.size;
    },
  };
}

function peer(conn: Deno.Conn): string {
  const a = conn.remoteAddr as Deno.NetAddr;
  return `${a.hostname}:${a.port}`;
}

function isSocketError(error: unknown): boolean {
  return error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.BadResource ||
    error instanceof Deno.errors.Interrupted ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.NotConnected;
}
