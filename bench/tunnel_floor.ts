/**
 * The floor of a CONNECT relay in Deno: a throwaway tunnel with no HTTP beyond
 * finding the CONNECT line, one 256 KiB buffer per direction, plain
 * `conn.read()`/`conn.write()`, `closeWrite()` on a FIN and no-delay on both
 * sockets. It is NOT a proxy to use (loopback destinations only); it exists so
 * that waypost's tunnel figures can be read against what the runtime allows,
 * in the same run:
 *
 *   deno task bench:tunnel:tls --floor
 *   deno run --allow-net bench/tunnel_floor.ts PORT
 */
const port = Number(Deno.args[0] ?? 18203);
const BUFFER_BYTES = 256 * 1024;
const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1"]);
const latin1 = new TextDecoder("latin1");

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

async function pump(from: Deno.TcpConn, to: Deno.TcpConn, early?: Uint8Array): Promise<void> {
  try {
    if (early !== undefined && early.length > 0) await writeAll(to, early);
    const buf = new Uint8Array(BUFFER_BYTES);
    while (true) {
      const n = await from.read(buf);
      if (n === null) break;
      await writeAll(to, buf.subarray(0, n));
    }
    await to.closeWrite();
  } catch {
    for (const conn of [from, to]) {
      try {
        conn.close();
      } catch {
        // closed already
      }
    }
  }
}

async function handle(client: Deno.TcpConn): Promise<void> {
  client.setNoDelay(true);
  const head = new Uint8Array(8192);
  let length = 0;
  let end = -1;
  while (end < 0) {
    const n = await client.read(head.subarray(length));
    if (n === null) return client.close();
    length += n;
    end = latin1.decode(head.subarray(0, length)).indexOf("\r\n\r\n");
  }
  const authority = latin1.decode(head.subarray(0, end)).split("\r\n")[0].split(" ")[1] ?? "";
  const colon = authority.lastIndexOf(":");
  const hostname = authority.slice(0, colon).replace(/^\[|\]$/g, "");
  if (!LOOPBACK.has(hostname)) return client.close(); // a benchmark tool: loopback only
  const origin = await Deno.connect({ hostname, port: Number(authority.slice(colon + 1)) });
  origin.setNoDelay(true);
  await writeAll(client, new TextEncoder().encode("HTTP/1.1 200 Connection established\r\n\r\n"));
  await Promise.all([pump(client, origin, head.slice(end + 4, length)), pump(origin, client)]);
  for (const conn of [client, origin]) {
    try {
      conn.close();
    } catch {
      // closed already
    }
  }
}

for await (const conn of Deno.listen({ hostname: "127.0.0.1", port })) handle(conn).catch(() => {});
