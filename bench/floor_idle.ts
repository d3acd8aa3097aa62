/**
 * The floor for an idle connection in Deno: a throwaway server that holds each
 * connection in a pending one-byte read (no buffer of its own) and answers
 * every request with a fixed 100-byte response, with no HTTP at all (a request
 * is whatever one read brings). It is NOT a server to use; bench/idle.ts
 * measures it beside waypost to say what an idle connection costs the runtime
 * itself (the Rust resource, the pending op, the promise and async frame of a
 * read).
 *
 *   deno run --allow-net bench/floor_idle.ts PORT
 */
const port = Number(Deno.args[0] ?? 18202);
const response = new TextEncoder().encode(`HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n${"x".repeat(100)}`);
const listener = Deno.listen({ hostname: "127.0.0.1", port });

async function serve(conn: Deno.Conn): Promise<void> {
  const probe = new Uint8Array(1);
  try {
    while ((await conn.read(probe)) !== null) {
      await conn.read(new Uint8Array(4096)); // the rest of the request (one segment), in a buffer not kept
      await conn.write(response);
    }
  } catch {
    // reset: just close
  }
  conn.close();
}

for await (const conn of listener) serve(conn);
