/**
 * Small helpers for ending connections that may already be gone. Closing or
 * half-closing a socket the peer has reset is an ordinary event, never an error
 * worth reporting.
 *
 * @module
 */

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
export function writeThenClose(conn: Deno.Conn, bytes: Uint8Array): void {
  conn.write(bytes).catch(() => {
    // The peer left already; closing is all that is left to do.
  }).finally(() => closeQuietly(conn));
}
