/**
 * Small helpers for ending connections that may already be gone. Closing or
 * half-closing a socket the peer has reset is an ordinary event, never an error
 * worth reporting.
 *
 * @module
 */
import { type Writable, writeAll } from "./writer.ts";

/** Closes a connection that may already be closed. */
export function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed (BadResource): nothing left to release.
  }
}

/** Half-closes (shutdown(SHUT_WR)) a connection whose peer may already be gone. */
export async function closeWriteQuietly(conn: Deno.Conn): Promise<void> {
  try {
    await conn.closeWrite();
  } catch {
    // The socket is already fully closed: there is no sending side left to end.
  }
}

/**
 * Writes a short final message (an error response) without waiting on the peer,
 * then closes. Fits in the socket buffer, so it never blocks on a slow reader.
 */
export function writeThenClose(conn: Deno.Conn, bytes: Uint8Array, out: Writable = conn): void {
  writeAll(out, bytes).catch(() => {
    // The peer left already; closing is all that is left to do.
  }).finally(() => closeQuietly(conn));
}

/**
 * Writes to the client; if the client is gone, the origin side is dropped too,
 * then the error rises. (No async frame of its own: it is on every response's path.)
 */
export function writeOrDrop(out: Writable, bytes: Uint8Array, upstream: Deno.Conn): Promise<void> {
  let written: Promise<void>;
  try {
    written = writeAll(out, bytes);
  } catch (error) {
    closeQuietly(upstream);
    return Promise.reject(error);
  }
  return written.catch((error) => {
    closeQuietly(upstream);
    throw error;
  });
}

/** Waits for `promise` or `ms`, whichever is first (the timer is always cleared). */
export async function settleWithin(promise: Promise<unknown> | null, ms: number): Promise<void> {
  if (promise === null) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([promise, new Promise((resolve) => timer = setTimeout(resolve, ms))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * How long and how much of what the peer still sends is read and dropped after
 * an early answer, before the close. Closing with unread bytes makes the kernel
 * send a reset, which can destroy the answer before the peer reads it.
 */
export const LINGER = Object.freeze({ ms: 1000, bytes: 64 * 1024 * 1024 });

/**
 * A lingering close: ends our sending side at once, reads and drops what the
 * peer still sends (up to {@link LINGER}), then closes. `read` reads once and
 * returns the byte count, or null at EOF.
 */
export async function lingeringClose(
  conn: Deno.Conn,
  read: () => Promise<number | null>,
  limits: { readonly ms: number; readonly bytes: number } = LINGER,
): Promise<void> {
  await closeWriteQuietly(conn);
  const timer = setTimeout(() => closeQuietly(conn), limits.ms);
  let total = 0;
  try {
    while (total < limits.bytes) {
      const n = await read();
      if (n === null) break;
      total += n;
    }
  } catch {
    // The peer reset, or the timer closed the connection: the linger is over either way.
  } finally {
    clearTimeout(timer);
    closeQuietly(conn);
  }
}
