/**
 * The only module that opens connections to origins: `Deno.connect` with a
 * timeout, error classification (docs/design.md outcome table), and a pool of idle
 * keep-alive connections reused across clients.
 *
 * @module
 */
import { coarseNow, tick } from "./clock.ts";
import { ProxyError, UpstreamError, UpstreamTimeoutError } from "./errors.ts";
import { closeQuietly } from "./conn.ts";
import { ConnReader } from "./reader.ts";

/** An open connection to an origin and its reader. */
export interface UpstreamConn {
  /** The TCP connection. */
  readonly conn: Deno.TcpConn;
  /** Buffered reader over `conn`. */
  readonly reader: ConnReader;
  /** Pool key: `host:port`. */
  readonly key: string;
  /** Whether this connection came from the pool (it may have gone stale). */
  reused: boolean;
  /** The pool's bookkeeping for this connection, made on its first release and reused. */
  idle?: Idle;
}

/** Pool settings. */
export interface PoolOptions {
  /** Upstream connect timeout in milliseconds. */
  connectTimeoutMs: number;
  /** Idle connections kept per origin. */
  maxIdlePerOrigin: number;
  /** Idle connections kept in total. */
  maxIdle: number;
  /** How long an idle connection is kept, in milliseconds. */
  idleTimeoutMs: number;
  /** Read buffer size for upstream connections. */
  bufferBytes: number;
}

interface Idle {
  up: UpstreamConn;
  /** `coarseNow()` when it became idle. */
  since: number;
  /** Removes and closes the connection if it is still idle (its idle read settled). */
  drop: () => void;
  /** True while in the idle list (a settled idle read then finds it without a search). */
  pooled: boolean;
}

/**
 * Opens a TCP connection, classifying failures: refused or unresolvable -> 502
 * ({@link UpstreamError}), no connection within `timeoutMs` -> 504
 * ({@link UpstreamTimeoutError}).
 */
export async function connectUpstream(hostname: string, port: number, timeoutMs: number): Promise<Deno.TcpConn> {
  const abort = new AbortController();
  // A timeout of 0 is off: the system's own connect timeout still applies.
  const timer = timeoutMs > 0 ? setTimeout(() => abort.abort(), timeoutMs) : undefined;
  try {
    const conn = await Deno.connect({ hostname, port, signal: abort.signal });
    try {
      conn.setNoDelay(true); // heads and bodies are written whole: never wait for Nagle
    } catch (error) {
      closeQuietly(conn);
      throw error;
    }
    return conn;
  } catch (error) {
    throw classifyConnectError(error, abort.signal.aborted);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Maps a `Deno.connect` failure to a proxy error (docs/design.md, platform fact
 * 5), by error class wherever the runtime gives one. Only a failed name lookup
 * has no class of its own in Deno 2.9 (a plain `Error`): it is recognised by
 * {@link isLookupFailure}, the one place that reads a message text.
 */
export function classifyConnectError(error: unknown, timedOut: boolean): ProxyError {
  if (timedOut || error instanceof Deno.errors.TimedOut) {
    return new UpstreamTimeoutError("Timed out connecting to the origin", "upstream-connect-timeout");
  }
  if (error instanceof Deno.errors.ConnectionRefused) {
    return new UpstreamError("The origin refused the connection", "upstream-refused", error);
  }
  if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
    // Deno's permission system refused (--allow-net with a host list): a policy answer, 403.
    return new ProxyError("The proxy is not permitted to connect to that origin", {
      status: 403,
      code: "upstream-not-permitted",
      cause: error,
    });
  }
  if (error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.ConnectionAborted) {
    return new UpstreamError("The origin reset the connection", "upstream-reset", error);
  }
  if (error instanceof Deno.errors.NetworkUnreachable || error instanceof Deno.errors.AddrNotAvailable) {
    return new UpstreamError("The origin's network is unreachable", "upstream-unreachable", error);
  }
  if (isLookupFailure(error)) {
    return new UpstreamError("Cannot resolve the origin's host name", "upstream-unresolvable", error);
  }
  return new UpstreamError("Cannot connect to the origin", "upstream-connect-failed", error);
}

/**
 * Whether a connect failure is a failed name lookup: a `NotFound` error, or the
 * plain `Error` Deno 2.9 throws, whose message starts "failed to lookup address
 * information" (tests/upstream_test.ts pins this text, so a runtime upgrade that
 * changes it fails a test instead of silently turning DNS failures into
 * `upstream-connect-failed`).
 */
export function isLookupFailure(error: unknown): boolean {
  if (error instanceof Deno.errors.NotFound) return true;
  return error instanceof Error && error.constructor === Error &&
    error.message.startsWith("failed to lookup address information");
}

/** Keep-alive connections to origins, reused across client connections. */
export class UpstreamPool {
  readonly #options: PoolOptions;

  /** New settings for connections opened and pooled from now on (a reload). */
  configure(options: PoolOptions): void {
    Object.assign(this.#options, options);
  }
  readonly #idle = new Map<string, Idle[]>();
  #idleCount = 0;
  #closed = false;
  #sweeper: ReturnType<typeof setInterval> | undefined;

  /** Creates an empty pool. */
  constructor(options: PoolOptions) {
    this.#options = { ...options };
  }

  /** Expires idle connections: one interval while any are held, no timer per release. */
  #sweep(): void {
    // An idle timeout of 0 is off (as for every timeout): idle connections stay until the origin closes them.
    const cutoff = this.#options.idleTimeoutMs > 0 ? tick() - this.#options.idleTimeoutMs : -Infinity;
    for (const [key, list] of this.#idle) {
      if (list.length === 0) {
        this.#idle.delete(key);
        continue;
      }
      // Lists are in release order: the oldest are at the front.
      let expired = 0;
      while (expired < list.length && list[expired].since <= cutoff) {
        const idle = list[expired++];
        idle.pooled = false;
        closeQuietly(idle.up.conn);
      }
      if (expired === 0) continue;
      list.splice(0, expired);
      this.#idleCount -= expired;
      if (list.length === 0) this.#idle.delete(key);
    }
    if (this.#idleCount === 0) {
      this.#idle.clear(); // only emptied lists are left
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    }
  }

  /** Number of idle connections held. */
  get idleCount(): number {
    return this.#idleCount;
  }

  /** Takes an idle connection for `key` (`host:port`), or null when none is held. */
  take(key: string): UpstreamConn | null {
    const list = this.#idle.get(key);
    const idle = list?.pop();
    if (idle === undefined) return null;
    idle.pooled = false;
    this.#idleCount--; // (an emptied list stays for the next release; the sweeper removes it)
    idle.up.reused = true;
    return idle.up;
  }

  /** Opens a new connection to `hostname:port` (never pooled until released). */
  async open(hostname: string, port: number, dial: string = hostname): Promise<UpstreamConn> {
    // `dial`: the checked address to connect to when the destination stage resolved the name.
    const conn = await connectUpstream(dial, port, this.#options.connectTimeoutMs);
    return { conn, reader: new ConnReader(conn, this.#options.bufferBytes), key: `${hostname}:${port}`, reused: false };
  }

  /** Returns a connection whose last exchange completed cleanly. */
  release(up: UpstreamConn): void {
    const o = this.#options;
    if (this.#closed || up.reader.buffered > 0 || up.reader.eof || o.maxIdlePerOrigin <= 0) {
      closeQuietly(up.conn);
      return;
    }
    let list = this.#idle.get(up.key);
    if (list === undefined) this.#idle.set(up.key, list = []);
    if (list.length >= o.maxIdlePerOrigin || this.#idleCount >= o.maxIdle) {
      const oldest = list.length > 0 ? list.shift()! : null;
      if (oldest !== null) {
        oldest.pooled = false;
        this.#idleCount--;
        closeQuietly(oldest.up.conn);
      } else {
        closeQuietly(up.conn);
        return;
      }
    }
    let entry = up.idle;
    if (entry === undefined) {
      const made: Idle = { up, since: 0, drop: () => this.#remove(made), pooled: false };
      entry = up.idle = made;
    }
    entry.since = coarseNow();
    entry.pooled = true;
    list.push(entry);
    this.#idleCount++;
    // RFC 9112 §9.3: responses pair with requests by order. Bytes or EOF arriving while
    // no request is outstanding belong to nothing: the connection is dropped, never reused.
    up.reader.prefetch().then(entry.drop, entry.drop);
    // An idle timeout of 0 is off: idle connections stay until the origin closes them or the bounds evict them.
    if (this.#sweeper === undefined && o.idleTimeoutMs > 0) {
      this.#sweeper = setInterval(() => this.#sweep(), Math.max(100, Math.min(5000, o.idleTimeoutMs / 4)));
      Deno.unrefTimer(this.#sweeper);
    }
  }

  /** Removes and closes an idle entry if it is still in the pool. */
  #remove(entry: Idle): void {
    // Taken by a request (its response read continues), expired or closed: nothing to do.
    if (!entry.pooled) return;
    entry.pooled = false;
    const list = this.#idle.get(entry.up.key);
    const at = list === undefined ? -1 : list.indexOf(entry);
    if (at !== -1) list!.splice(at, 1);
    this.#idleCount--;
    closeQuietly(entry.up.conn);
  }

  /** Closes every idle connection and refuses new ones into the pool. */
  close(): void {
    this.#closed = true;
    for (const list of this.#idle.values()) {
      for (const idle of list) {
        idle.pooled = false;
        closeQuietly(idle.up.conn);
      }
    }
    this.#idle.clear();
    this.#idleCount = 0;
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
  }
}
