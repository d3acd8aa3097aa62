/**
 * Byte relays for CONNECT tunnels (RFC 9110 §9.3.6) and protocol upgrades
 * (RFC 9110 §7.8). Each direction ends on its own: a FIN from one side becomes
 * `closeWrite()` (shutdown(SHUT_WR)) on the other while the opposite direction
 * keeps flowing. A reset or error on either side closes both.
 *
 * @module
 */
import type { ConnReader } from "./reader.ts";
import { closeQuietly, closeWriteQuietly } from "./conn.ts";
import { readOnceFor } from "./direct_read.ts";
import { writeAll } from "./writer.ts";

/** How a tunnel ended. */
export type TunnelEnd = "closed" | "reset" | "idle-timeout" | "aborted";

/** What a tunnel carried, for logs and the library user. */
export interface TunnelStats {
  /** `host:port` of the origin. */
  target: string;
  /** Bytes relayed client -> origin (including early data). */
  bytesUp: number;
  /** Bytes relayed origin -> client. */
  bytesDown: number;
  /** Milliseconds from the start of the relay to its end. */
  durationMs: number;
  /** Which side sent the first FIN, if any. */
  firstFin: "client" | "origin" | null;
  /** How the tunnel ended: both FINs (`closed`), an error, the idle timeout, or shutdown. */
  end: TunnelEnd;
}

/** One side of a relay. */
export interface RelaySide {
  readonly conn: Deno.TcpConn;
  /** Reader over `conn`; bytes it already buffered are relayed first. */
  readonly reader: ConnReader;
}

/** Options for {@link relay}. */
export interface RelayOptions {
  /** `host:port` recorded in the stats. */
  target: string;
  /** Close the tunnel after this many ms without a byte either way; 0 = never. */
  idleTimeoutMs: number;
  /**
   * Once one side has sent its FIN, close the tunnel after this many ms without a
   * byte (a half-open tunnel whose other peer never finishes); 0 = never.
   */
  halfClosedIdleMs?: number;
  /** Aborting ends the tunnel (shutdown). */
  signal?: AbortSignal;
}

/**
 * Read buffer per direction: it starts small (idle tunnels stay cheap), jumps to
 * the largest size when a read fills it, the size that measured fastest with bench/tunnel.ts
 * (64 KiB: 0.43 of direct, 256 KiB: 0.73, 1 MiB: 0.77), and shrinks back when
 * reads come in small.
 */
export const RELAY_BUFFER_BYTES = { min: 16 * 1024, max: 256 * 1024 } as const;

/** How often a side that sent its FIN is probed for a reset (an empty write). */
const FIN_PROBE_MS = 250;
const EMPTY = new Uint8Array(0);

/** Relays bytes both ways until both directions have ended. */
export async function relay(client: RelaySide, origin: RelaySide, options: RelayOptions): Promise<TunnelStats> {
  const started = performance.now();
  const stats: TunnelStats = {
    target: options.target,
    bytesUp: 0,
    bytesDown: 0,
    durationMs: 0,
    firstFin: null,
    end: "closed",
  };
  let failed = false;
  let lastActivity = started;
  const closeBoth = (why: TunnelEnd) => {
    if (!failed) {
      failed = true;
      stats.end = why;
    }
    closeQuietly(client.conn);
    closeQuietly(origin.conn);
  };

  const pump = async (from: RelaySide, to: RelaySide, up: boolean) => {
    // Bytes the reader already holds (early data) go first; then single reads (the runtime's
    // read op: lib/direct_read.ts) into one reused buffer per direction (docs/design.md
    // platform facts 3 and 4).
    const readOnce = readOnceFor(from.conn);
    let size: number = RELAY_BUFFER_BYTES.min;
    let buf: Uint8Array | null = null;
    while (true) {
      let chunk: Uint8Array | null;
      try {
        if (from.reader.buffered > 0 || from.reader.reading) chunk = await from.reader.next();
        else {
          if (buf === null || buf.length !== size) buf = new Uint8Array(size);
          const n = await readOnce(buf);
          chunk = n === null || n === 0 ? null : buf.subarray(0, n);
          // A full read means bulk data: go straight to the largest buffer; shrink when traffic is light.
          if (n === size) size = RELAY_BUFFER_BYTES.max;
          else if (n !== null && n < size / 16 && size > RELAY_BUFFER_BYTES.min) size /= 2;
        }
      } catch {
        // A read error is a reset (or our own close): end both sides at once.
        closeBoth("reset");
        return;
      }
      if (chunk === null) {
        if (stats.firstFin === null && !failed) {
          stats.firstFin = up ? "client" : "origin";
          lastActivity = performance.now();
          watchIdle(); // from now on the half-closed idle limit applies too
        }
        probeAfterFin(from.conn, up ? 0 : 1);
        await closeWriteQuietly(to.conn);
        return;
      }
      lastActivity = performance.now();
      if (up) stats.bytesUp += chunk.length;
      else stats.bytesDown += chunk.length;
      writing[up ? 1 : 0] = true;
      try {
        await writeAll(to.conn, chunk);
      } catch {
        // The receiving side is gone: nothing more can be delivered either way.
        closeBoth("reset");
        return;
      } finally {
        writing[up ? 1 : 0] = false;
      }
    }
  };
  /** Whether a data write is pending to the client (0) or to the origin (1): a probe then waits its turn. */
  const writing = [false, false];

  // One interval checks both idle limits: the tunnel's own (if set) and, after the first
  // FIN, the half-closed one (RFC 9110 §9.3.6 expects a tunnel to end once a side closed;
  // the other direction keeps flowing as long as bytes move).
  let idleTimer: ReturnType<typeof setInterval> | undefined;
  const idleLimit = () => {
    const halfClosed = stats.firstFin !== null ? options.halfClosedIdleMs ?? 0 : 0;
    const limits = [options.idleTimeoutMs, halfClosed].filter((ms) => ms > 0);
    return limits.length === 0 ? 0 : Math.min(...limits);
  };
  function watchIdle(): void {
    const limit = idleLimit();
    if (limit <= 0) return;
    clearInterval(idleTimer);
    idleTimer = setInterval(() => {
      if (performance.now() - lastActivity >= idleLimit()) closeBoth("idle-timeout");
    }, Math.max(10, Math.min(1000, limit / 4)));
  }
  watchIdle();
  // After a side's FIN nothing reads it any more, and reads there keep returning EOF even
  // after a reset: an empty write is what notices a reset (docs/design.md, fact 13), so a
  // side that sent its FIN is probed until the tunnel ends.
  // A probe is never written while another write to that side is pending (a data write
  // notices a reset by itself), and the next one is armed only when the last has ended.
  let ended = false;
  const probes: ReturnType<typeof setTimeout>[] = [];
  function probeAfterFin(conn: Deno.Conn, side: 0 | 1): void {
    const slot = probes.length;
    const arm = () => {
      if (!ended && !failed) probes[slot] = setTimeout(probe, FIN_PROBE_MS);
    };
    const probe = () => {
      if (writing[side]) arm();
      else {
        conn.write(EMPTY).then(arm, () => {
          if (!ended) closeBoth("reset");
        });
      }
    };
    arm();
  }
  const onAbort = () => closeBoth("aborted");
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    await Promise.all([pump(client, origin, true), pump(origin, client, false)]);
  } finally {
    ended = true;
    clearInterval(idleTimer);
    for (const timer of probes) clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
    closeQuietly(client.conn);
    closeQuietly(origin.conn);
  }
  stats.durationMs = Math.round(performance.now() - started);
  return stats;
}
