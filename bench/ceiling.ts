/**
 * The ceiling a Deno forwarder can reach on this machine: a throwaway keep-alive
 * forwarder with no HTTP correctness at all (it finds the end of the head, keeps
 * one origin connection per client, and understands only Content-Length
 * responses). It is NOT a proxy to use; it exists so that waypost's figures can
 * be read against what `conn.read()`/`conn.write()` alone cost, in the same
 * harness and the same run:
 *
 *   deno run --allow-net bench/ceiling.ts 18201 [BUFFER_BYTES]
 *   python3 /tmp/proxy-bench/bench.py --targets direct ceiling="exec deno run --allow-net bench/ceiling.ts {port}" ...
 */
const port = Number(Deno.args[0] ?? 18201);
/** Read buffer per direction (second argument; 64 KiB by default, 4096 to find the memory floor). */
const bufferBytes = Number(Deno.args[1] ?? 65536);
const latin1 = new TextDecoder("latin1");
const encoder = new TextEncoder();

function headEnd(b: Uint8Array, n: number): number {
  for (let i = 3; i < n; i++) {
    if (b[i] === 10 && b[i - 1] === 13 && b[i - 2] === 10 && b[i - 3] === 13) return i + 1;
  }
  return -1;
}

async function serve(client: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(bufferBytes);
  const upBuf = new Uint8Array(bufferBytes);
  let up: Deno.Conn | null = null;
  try {
    while (true) {
      const n = await client.read(buf);
      if (n === null) break;
      const end = headEnd(buf, n);
      if (end < 0) break; // heads split across reads are not handled
      const head = latin1.decode(buf.subarray(0, end));
      const sp1 = head.indexOf(" ");
      const sp2 = head.indexOf(" ", sp1 + 1);
      const url = new URL(head.slice(sp1 + 1, sp2));
      const out = encoder.encode(
        `${head.slice(0, sp1)} ${url.pathname} HTTP/1.1\r\n${head.slice(head.indexOf("\r\n") + 2)}`,
      );
      up ??= await Deno.connect({ hostname: url.hostname, port: Number(url.port || 80) });
      await up.write(out);
      let got = 0;
      let total = -1;
      while (total < 0 || got < total) {
        const m = await up.read(upBuf);
        if (m === null) return;
        if (total < 0) {
          const e = headEnd(upBuf, m);
          const length = /content-length: *(\d+)/i.exec(latin1.decode(upBuf.subarray(0, e)));
          if (length === null) return;
          total = e + Number(length[1]);
        }
        got += m;
        for (let off = 0; off < m;) off += await client.write(upBuf.subarray(off, m));
      }
    }
  } catch {
    // Throwaway: any error ends the connection.
  } finally {
    client.close();
    up?.close();
  }
}

Deno.addSignalListener("SIGINT", () => Deno.exit(0));
Deno.addSignalListener("SIGTERM", () => Deno.exit(0));
for await (const conn of Deno.listen({ hostname: "127.0.0.1", port })) {
  conn.setNoDelay(true);
  serve(conn);
}
