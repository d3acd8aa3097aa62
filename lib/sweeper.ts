/**
 * The one timer mechanism: a single interval per proxy checks every session's
 * deadlines (request head, keep-alive idle, origin response head, body idle,
 * hook) and ticks the coarse clock that timestamps use, so no timer is made
 * per request. A deadline never fires early and fires at most two ticks late.
 *
 * @module
 */
import { tick } from "./clock.ts";
import { closeQuietly } from "./conn.ts";
import { expireHook, type HookWatch } from "./hook_runner.ts";
import type { Logger } from "./log.ts";

/** What the sweeper reads and sets on a session. */
export interface Swept extends HookWatch {
  readonly conn: Deno.TcpConn;
  upstream: Deno.Conn | null;
  /** Waiting for a request head; `deadline` applies. */
  waitingHead: boolean;
  deadline: number;
  /** Deadline for the origin's response head (0: not waiting). */
  responseDeadline: number;
  responseTimedOut: boolean;
  /** A body is streaming either way; `activity` is its last byte. */
  inBody: boolean;
  /** An exchange is in progress on this connection. */
  busy: boolean;
  activity: number;
  /** A hook's body stream being sent (cancelled with the connection on a body timeout). */
  stream: { cancel(): void } | null;
}

/** The timeouts the sweeper enforces (ms; 0 or Infinity where off). */
export interface SweepTimeouts {
  bodyTimeoutMs: number;
  headerTimeoutMs: number;
  idleTimeoutMs: number;
  responseTimeoutMs: number;
  /** 0 when no hooks or no hook limit. */
  hookTimeoutMs: number;
}

/** How often to sweep: a quarter of the shortest timeout, between 25 ms and 1 s. */
export function sweepInterval(t: SweepTimeouts): number {
  // A timeout of 0 is off and does not count.
  const on = [t.bodyTimeoutMs, t.headerTimeoutMs, t.idleTimeoutMs, t.responseTimeoutMs, t.hookTimeoutMs]
    .filter((ms) => ms > 0);
  const shortest = Math.min(...on);
  return Math.max(25, Math.min(1000, shortest / 4));
}

/** Starts the sweeper over `sessions`; `expireHead` answers a head that did not arrive in time. */
export function startSweeper<S extends Swept>(
  sessions: Iterable<S>,
  options: {
    intervalMs: number;
    bodyTimeoutMs: number;
    logger: Logger;
    expireHead: (s: S) => void;
    /** Called after each sweep: `busy` when an exchange is in progress on some connection. */
    onTick?: (now: number, busy: boolean) => void;
  },
): { stop(): void } {
  const { intervalMs, logger, expireHead, onTick } = options;
  // Body activity is stamped with the coarse clock, which this sweeper refreshes: a stamp
  // can be up to one interval old, so that much slack keeps the timeout from firing early.
  const bodyIdleMs = options.bodyTimeoutMs > 0 ? options.bodyTimeoutMs + intervalMs : Infinity;
  tick();
  const timer = setInterval(() => {
    const now = tick();
    let busy = false;
    for (const s of sessions) {
      if (s.busy) busy = true;
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
        s.stream?.cancel();
      }
    }
    onTick?.(now, busy);
  }, intervalMs);
  Deno.unrefTimer(timer);
  return { stop: () => clearInterval(timer) };
}

/** `host:port` of the peer, for logs. */
export function peer(conn: Deno.Conn): string {
  const a = conn.remoteAddr as Deno.NetAddr;
  return `${a.hostname}:${a.port}`;
}
