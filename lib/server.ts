/**
 * The only module that listens: the accept loop, admission, one session per
 * client connection (session.ts), the one sweeper for every timeout
 * (sweeper.ts), and graceful shutdown.
 *
 * @module
 */
import { DEFAULT_CHUNKED_LIMITS } from "./chunked.ts";
import { closeQuietly, lingeringClose } from "./conn.ts";
import { describe } from "./errors.ts";
import type { ExchangeContext } from "./exchange_state.ts";
import type { HeadLimits } from "./head.ts";
import { composeHooks } from "./hooks.ts";
import { consoleLogger, type Logger } from "./log.ts";
import { type ProxyOptions, type ResolvedOptions, resolveOptions } from "./options.ts";
import { admissionVerdict, ClientCounts, MAX_LINGERING_REFUSALS, refuse } from "./admission.ts";
import { activityCount, expireHead, newSession, serveClient, type Session, type SessionHost } from "./session.ts";
import { idleRelease } from "./idle_release.ts";
import { startSweeper, sweepInterval } from "./sweeper.ts";
import { UpstreamPool } from "./upstream.ts";
import { type Cidr, matchCidr, parseCidr } from "./cidr.ts";
import { ProxyProtocolError, readProxyHeader } from "./proxy_protocol.ts";
import { basicChallenge, Credentials, FailureDelay } from "./auth.ts";
import { parseNoProxy, parseParentProxy } from "./parent.ts";
import { type DestinationPolicy, listensBeyondLoopback, parseHostRule } from "./rules.ts";
import { prepareResolver } from "./destination.ts";
import type { ProxyHooks } from "./hooks.ts";
import { Metrics, RecentExchanges } from "./metrics.ts";
import type { PageState } from "./pages.ts";
import { VERSION } from "./version.ts";

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
  /** The admin port's address (`adminPort`), or null. */
  readonly adminAddr: Deno.NetAddr | null;
  /** The proxy's metrics (what `/metrics` serves), or null with `metrics: false`. */
  readonly metrics: Metrics | null;
  /**
   * Applies new options to new connections and new exchanges; open ones are
   * not dropped. `hostname`, `port`, `reusePort`, `hooks`, `logger`, `metrics`
   * and `signal` need a restart: a different value is refused.
   *
   * @throws {TypeError} when an option is invalid or needs a restart; the old options stay.
   */
  reconfigure(options: ProxyOptions): void;
}

/** Options only a restart can change. */
const RESTART_KEYS = [
  "hostname",
  "port",
  "adminPort",
  "reusePort",
  "hooks",
  "logger",
  "metrics",
  "memoryRelease",
  "signal",
  "onTunnelEnd",
  "proxyProtocol",
] as const;

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
  let opts: ResolvedOptions = resolveOptions(options);
  refuseOpenRelay(opts);
  const logger: Logger = opts.logger ?? consoleLogger("warn");
  // The built-in consumers of exchange records (metrics, the status page's recent list) come first.
  const metrics = opts.metrics ? new Metrics({ version: VERSION, deno: Deno.version.deno }) : null;
  const recent = opts.metrics ? new RecentExchanges(50) : null;
  const builtIn: ProxyHooks[] = metrics === null ? [] : [{
    onExchangeEnd(record) {
      metrics.record(record);
      recent!.add(record);
    },
  }];
  const user = opts.hooks === undefined ? [] : Array.isArray(opts.hooks) ? opts.hooks : [opts.hooks as ProxyHooks];
  const all = [...builtIn, ...user];
  const hooks = composeHooks(all.length > 0 ? all : undefined);
  const listener = opts.reusePort
    ? Deno.listen({ hostname: opts.hostname, port: opts.port, transport: "tcp", reusePort: true })
    : Deno.listen({ hostname: opts.hostname, port: opts.port, transport: "tcp" });
  // The admin port is opened before anything starts: if it cannot be, the main listener is closed again.
  let adminListener: Deno.TcpListener | null = null;
  try {
    adminListener = opts.adminPort > 0
      ? Deno.listen({ hostname: opts.hostname, port: opts.adminPort, transport: "tcp" })
      : null;
  } catch (error) {
    listener.close();
    throw error;
  }
  const abort = new AbortController();
  const pages = {
    metrics,
    recent,
    adminAllow: [] as Cidr[],
    draining: false,
    name: opts.via,
    version: VERSION,
  };
  const ctx = exchangeContext(opts, logger, hooks, abort.signal, pages, null);
  const host: { -readonly [K in keyof SessionHost]: SessionHost[K] } = {
    ctx,
    limits: ctx.limits,
    headerTimeoutMs: opts.headerTimeoutMs,
    idleTimeoutMs: opts.idleTimeoutMs,
    hooks,
  };
  const sessions = new Set<Session>();
  /** Refused connections still lingering (shutdown waits for them: at most LINGER.ms). */
  const refusing = new Set<Promise<void>>();
  const perClient = new ClientCounts();
  /** The one sweeper, with the current options (started again by a reload). */
  const startSessionSweeper = () =>
    startSweeper(sessions, {
      intervalMs: ctx.tickMs,
      bodyTimeoutMs: opts.bodyTimeoutMs,
      logger,
      expireHead: (s) => expireHead(host, s),
      onTick: release === null ? undefined : (now, busy) => release.tick(now, busy, activityCount()),
    });
  // Heap memory goes back to the system once the proxy is idle after a burst (lib/idle_release.ts).
  const release = opts.memoryRelease ? idleRelease() : null;
  let sweeper = startSessionSweeper();

  /** Connections whose PROXY protocol header is still being read (closed at shutdown). */
  const introducing = new Set<Deno.TcpConn>();

  /** The admission stage (after the PROXY header, when one is expected), then a session. */
  function accept(conn: Deno.TcpConn): void {
    conn.setNoDelay(true); // responses are written whole: never wait for Nagle
    if (!opts.proxyProtocol) return admit(conn, null, null);
    const socket = conn.remoteAddr as Deno.NetAddr;
    if (matchCidr(ctx.trusted, socket.hostname) === null) {
      // No guessing whether a header is there: only the listed load balancers may connect.
      logger.log("warn", "proxy-protocol-untrusted", { client: `${socket.hostname}:${socket.port}` });
      metrics?.connectionRefused("untrusted");
      closeQuietly(conn);
      return;
    }
    introducing.add(conn);
    readProxyHeader(conn, opts.proxyProtocolTimeoutMs).then(({ header, rest }) => {
      introducing.delete(conn);
      if (ctx.stopping) return closeQuietly(conn);
      // LOCAL (the balancer's own health check) and UNKNOWN carry no client: the socket's address stands.
      admit(conn, header.source, rest, header.destination);
    }, (error) => {
      introducing.delete(conn);
      logger.log("info", "proxy-protocol-failed", {
        client: `${socket.hostname}:${socket.port}`,
        error: error instanceof ProxyProtocolError ? error.code : describe(error),
      });
      closeQuietly(conn);
    });
  }

  function admit(
    conn: Deno.TcpConn,
    client: { hostname: string; port: number } | null,
    early: Uint8Array | null,
    reached: { hostname: string; port: number } | null = null,
    h: SessionHost = host,
  ): void {
    const address = client?.hostname ?? (conn.remoteAddr as Deno.NetAddr).hostname;
    if (h === host && ctx.allowClient.length > 0 && matchCidr(ctx.allowClient, address) === null) {
      // Not on the client allow-list: closed without a word (an answer would tell a scanner there is a proxy).
      const port = client?.port ?? (conn.remoteAddr as Deno.NetAddr).port;
      logger.log("warn", "client-denied", { client: `${address}:${port}` });
      metrics?.connectionRefused("denied");
      closeQuietly(conn);
      return;
    }
    const verdict = admissionVerdict(sessions.size, perClient.get(address), opts);
    if (verdict !== "admit") {
      metrics?.connectionRefused(verdict === "max-connections" ? "limit" : "client-limit");
      const closing = refuse(conn, verdict, {
        client,
        logger,
        proxyName: opts.via,
        details: opts.proxyStatusDetails,
        linger: refusing.size < MAX_LINGERING_REFUSALS,
      });
      refusing.add(closing);
      closing.finally(() => refusing.delete(closing));
      return;
    }
    perClient.add(address);
    metrics?.connectionOpened();
    const session = newSession(h, conn);
    if (client !== null) session.client = Object.freeze({ hostname: client.hostname, port: client.port });
    if (reached !== null) session.local = Object.freeze({ hostname: reached.hostname, port: reached.port });
    if (early !== null) session.reader.preload(early);
    sessions.add(session);
    // One callback pair for the session's whole lifetime (an async frame around
    // serveClient held twice the objects per idle connection; a .catch().finally()
    // chain three promises and five closures).
    session.done = serveClient(h, session).then(
      () => endSession(session, address),
      (error) => {
        try {
          logger.log("error", "session-crashed", { error: describe(error) });
        } catch {
          // A logger that throws must not keep the connection open.
        }
        return endSession(session, address);
      },
    );
  }

  /** A session's cleanup, once serveClient has ended. */
  async function endSession(s: Session, address: string): Promise<void> {
    try {
      if (s.lingerOnClose) {
        // An error answer may have left request bytes unread: a plain close would reset it away.
        await lingeringClose(s.conn, async () => (await s.reader.next())?.length ?? null);
      } else closeQuietly(s.conn);
    } finally {
      s.reader.dispose(); // its buffers go back for the next connection
      if (s.pinned !== null) closeQuietly(s.pinned.conn);
      s.ended = true;
      s.hookAbort?.abort();
      sessions.delete(s);
      perClient.remove(address);
      metrics?.connectionClosed();
    }
  }

  const acceptLoop = acceptConnections(listener, ctx, logger, accept);
  // The admin port: the proxy's own pages only, without the PROXY protocol (probes from a kubelet or a
  // monitoring system come straight, not through the balancer). Its sessions read the shared context
  // through a prototype, so a reload reaches them too.
  const adminCtx = Object.create(ctx, {
    adminOnly: { value: true },
  }) as typeof ctx;
  const adminHost = Object.create(host, { ctx: { value: adminCtx } }) as SessionHost;
  const adminLoop = adminListener === null
    ? Promise.resolve()
    : acceptConnections(adminListener, ctx, logger, (conn) => {
      conn.setNoDelay(true);
      admit(conn, null, null, null, adminHost);
    });
  let stopPromise: Promise<void> | null = null;
  const stopped = Promise.withResolvers<void>();
  const finished = (async () => {
    await acceptLoop;
    await stopped.promise;
  })();

  function shutdown(graceMs = 10_000): Promise<void> {
    if (stopPromise) return stopPromise;
    ctx.pages.draining = true;
    stopPromise = (async () => {
      // A load balancer polling /healthz sees 503 while the proxy still serves.
      if (opts.drainDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, opts.drainDelayMs));
      ctx.stopping = true;
      try {
        listener.close();
        adminListener?.close();
      } catch {
        // Already closed.
      }
      await acceptLoop;
      await adminLoop;
      for (const conn of introducing) closeQuietly(conn);
      await drainSessions(sessions, graceMs, logger);
      abort.abort();
      for (const s of sessions) {
        s.ended = true; // the proxy stops: hooks still running see an aborted signal
        s.hookAbort?.abort();
        closeQuietly(s.conn);
        if (s.upstream) closeQuietly(s.upstream);
        s.stream?.cancel(); // a hook's stalled body stream must not hold the shutdown
      }
      await Promise.all([...sessions].map((s) => s.done));
      await Promise.all(refusing);
      ctx.pool.close();
      sweeper.stop();
      stopped.resolve();
    })();
    return stopPromise;
  }

  if (opts.signal?.aborted) queueMicrotask(() => shutdown());
  else opts.signal?.addEventListener("abort", () => shutdown(), { once: true });

  function reconfigure(options: ProxyOptions): void {
    if (stopPromise !== null) throw new TypeError("The proxy is stopping: nothing to reconfigure");
    // Only keys the caller gave are compared: a restart-only key left out keeps its running value.
    for (const key of RESTART_KEYS) {
      const given = options[key];
      if (given === undefined) continue;
      const was = key === "port" ? (listener.addr as Deno.NetAddr).port : opts[key];
      if (!(key === "port" ? given === 0 || given === was : given === was)) {
        throw new TypeError(`Option ${key} cannot change without a restart`);
      }
    }
    const kept: Record<string, unknown> = {};
    for (const key of RESTART_KEYS) kept[key] = opts[key];
    const next = resolveOptions({
      ...options,
      ...kept,
      instanceId: options.instanceId ?? opts.instanceId,
    } as ProxyOptions);
    // Everything an exchange reads through the shared context changes in place: new
    // connections and the next exchange on an open one see it; exchanges under way keep theirs.
    refuseOpenRelay(next);
    const fresh = exchangeContext(
      { ...next, hooks: opts.hooks, logger: opts.logger, signal: opts.signal },
      logger,
      hooks,
      abort.signal,
      ctx.pages,
      ctx.pool,
      ctx.authFailures,
    );
    opts = fresh.options;
    Object.assign(ctx, { ...fresh, stopping: ctx.stopping });
    host.limits = ctx.limits;
    host.headerTimeoutMs = opts.headerTimeoutMs;
    host.idleTimeoutMs = opts.idleTimeoutMs;
    sweeper.stop();
    sweeper = startSessionSweeper();
  }

  return {
    addr: listener.addr as Deno.NetAddr,
    adminAddr: adminListener === null ? null : adminListener.addr as Deno.NetAddr,
    finished,
    shutdown,
    get connections() {
      return sessions.size;
    },
    metrics,
    reconfigure,
  };
}

/** The context every exchange of this proxy shares: limits, pool, hooks, the sweeper's tick. */
function exchangeContext(
  opts: ResolvedOptions,
  logger: Logger,
  hooks: ReturnType<typeof composeHooks>,
  abortSignal: AbortSignal,
  pages: PageState & { draining: boolean; adminAllow: readonly Cidr[]; name: string },
  existingPool: UpstreamPool | null,
  existingFailures: FailureDelay | null = null,
): ExchangeContext & {
  stopping: boolean;
  pages: PageState & { draining: boolean };
  trusted: Cidr[];
  allowClient: Cidr[];
} {
  const limits: HeadLimits = {
    maxRequestLineBytes: opts.maxRequestLineBytes,
    maxHeadBytes: opts.maxHeadBytes,
    maxFields: opts.maxFields,
  };
  // Responses legitimately carry more fields (many Set-Cookie lines): looser, still bounded.
  const responseLimits: HeadLimits = {
    maxRequestLineBytes: Math.max(opts.maxRequestLineBytes, 8192),
    maxHeadBytes: Math.max(opts.maxHeadBytes, 256 * 1024),
    maxFields: Math.max(opts.maxFields, 4000),
  };
  const poolOptions = {
    connectTimeoutMs: opts.connectTimeoutMs,
    maxIdlePerOrigin: opts.maxIdlePerOrigin,
    maxIdle: 4096,
    idleTimeoutMs: opts.upstreamIdleTimeoutMs,
    bufferBytes: 256 * 1024,
  };
  // A reconfigured proxy keeps its pool (and its idle connections) with the new settings.
  const pool = existingPool ?? new UpstreamPool(poolOptions);
  if (existingPool !== null) existingPool.configure(poolOptions);
  pages.adminAllow = opts.adminAllow.map(parseCidr);
  const trusted = opts.trustedProxies.map(parseCidr);
  const allowClient = opts.allowClient.map(parseCidr);
  const destinations: DestinationPolicy = {
    rules: opts.hostRules.map(parseHostRule),
    blockPrivate: !opts.allowPrivate && listensBeyondLoopback(opts.hostname),
    defaultAllow: opts.hostDefault === "allow",
  };
  prepareResolver(destinations);
  pages.name = opts.via;
  const hookTimeoutMs = hooks !== null ? opts.hookTimeoutMs : 0;
  return {
    options: opts,
    limits,
    responseLimits,
    chunkedLimits: { maxChunkLineBytes: DEFAULT_CHUNKED_LIMITS.maxChunkLineBytes, trailer: limits },
    responseChunkedLimits: {
      maxChunkLineBytes: DEFAULT_CHUNKED_LIMITS.maxChunkLineBytes,
      trailer: responseLimits,
      fromOrigin: true,
    },
    pool,
    logger,
    hooks,
    stopping: false,
    abortSignal,
    // Head, idle, response, body and hook timeouts: one sweeper for all sessions.
    tickMs: sweepInterval({ ...opts, hookTimeoutMs }),
    hookTimeoutMs: opts.hookTimeoutMs,
    pages,
    trusted,
    allowClient,
    credentials: opts.auth.length > 0 ? new Credentials(opts.auth) : null,
    authFailures: existingFailures ?? new FailureDelay(),
    authChallenge: basicChallenge(opts.authRealm),
    destinations,
    parent: opts.upstreamProxy === "" ? null : parseParentProxy(opts.upstreamProxy),
    noProxy: parseNoProxy(opts.noProxy),
    // A field of every context (one shape on the hot path); the admin port's context overrides it.
    adminOnly: false,
  };
}

/** Accepts connections until the proxy stops; accept errors never end the proxy. */
async function acceptConnections(
  listener: Deno.TcpListener,
  ctx: { readonly stopping: boolean },
  logger: Logger,
  admit: (conn: Deno.TcpConn) => void,
): Promise<void> {
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
}

/** Shutdown: idle sessions close now; busy ones finish their exchange for up to `graceMs`. */
async function drainSessions(sessions: Set<Session>, graceMs: number, logger: Logger): Promise<void> {
  for (const s of sessions) if (!s.busy) closeQuietly(s.conn);
  let graceTimer: ReturnType<typeof setTimeout> | undefined;
  const grace = new Promise<void>((resolve) => graceTimer = setTimeout(resolve, graceMs));
  await Promise.race([Promise.all([...sessions].map((s) => s.done)), grace]);
  clearTimeout(graceTimer);
  if (sessions.size > 0) logger.log("warn", "grace-expired", { closing: sessions.size });
}

/**
 * Safe defaults: a proxy reachable beyond loopback without authentication or
 * a client allow-list is an open relay for anyone who finds it.
 *
 * @throws {TypeError} naming the fix.
 */
function refuseOpenRelay(opts: ResolvedOptions): void {
  if (!listensBeyondLoopback(opts.hostname) || opts.allowOpen) return;
  if (opts.auth.length > 0 || opts.allowClient.length > 0) return;
  throw new TypeError(
    `Refusing to listen on ${opts.hostname} without authentication or a client allow-list: anyone who can reach it ` +
      "could use it as an open proxy. Add --auth user:password (or --auth-file), --allow-client CIDR, " +
      "or --allow-open if that is what you want",
  );
}
