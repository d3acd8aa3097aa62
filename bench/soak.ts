/**
 * Soak run: many requests through one proxy process, every response verified,
 * then open file descriptors and RSS of the proxy compared with their baseline.
 *
 *   deno task soak [--keepalive 100000] [--fresh 10000] [--conns 20]
 *
 * Keep-alive phase: `--conns` client connections share `--keepalive` requests.
 * Fresh phase: `--fresh` requests, each on a new connection (`Connection: close`).
 */
import { parseArgs } from "node:util";
import { RUN_FLAGS } from "./util.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    keepalive: { type: "string", default: "100000" },
    fresh: { type: "string", default: "10000" },
    conns: { type: "string", default: "20" },
  },
});
const KEEPALIVE = Number(values.keepalive);
const FRESH = Number(values.fresh);
const CONNS = Number(values.conns);

const enc = new TextEncoder();
const dec = new TextDecoder();

// Origin: the body names the path, so every response can be checked against its request.
const origin = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen() {} },
  (req) => new Response(`ok ${new URL(req.url).pathname}`),
);
const originPort = origin.addr.port;

const proxy = new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "--allow-net",
    ...RUN_FLAGS,
    new URL("../main.ts", import.meta.url).pathname,
    "--port",
    "0",
    "--log-level",
    "warn",
  ],
  stdout: "piped",
  stderr: "inherit",
}).spawn();
const reader = proxy.stdout.getReader();
const proxyPort = Number(/:(\d+)\s*$/m.exec(dec.decode((await reader.read()).value))![1]);
reader.releaseLock();
await proxy.stdout.cancel();

function fds(): number {
  return [...Deno.readDirSync(`/proc/${proxy.pid}/fd`)].length;
}
function rssMiB(): number {
  return Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${proxy.pid}/status`))![1]) / 1024;
}

/** Reads one response with Content-Length from `conn`, returning its body text. */
async function readResponse(conn: Deno.Conn, state: { buf: Uint8Array; len: number }): Promise<string> {
  while (true) {
    const text = dec.decode(state.buf.subarray(0, state.len));
    const end = text.indexOf("\r\n\r\n");
    if (end !== -1) {
      const m = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end));
      if (!m) throw new Error(`no content-length: ${text.slice(0, end)}`);
      const total = end + 4 + Number(m[1]);
      if (state.len >= total) {
        if (!text.startsWith("HTTP/1.1 200 ")) throw new Error(`status: ${text.slice(0, 40)}`);
        const body = text.slice(end + 4, total);
        state.buf.copyWithin(0, total, state.len);
        state.len -= total;
        return body;
      }
    }
    const n = await conn.read(state.buf.subarray(state.len));
    if (n === null) throw new Error("proxy closed the connection");
    state.len += n;
  }
}

let failures = 0;
const baseline = { fds: fds(), rss: rssMiB() };
const t0 = performance.now();
let next = 0;
await Promise.all(Array.from({ length: CONNS }, async () => {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  const state = { buf: new Uint8Array(65536), len: 0 };
  while (next < KEEPALIVE) {
    const i = next++;
    await conn.write(
      enc.encode(`GET http://127.0.0.1:${originPort}/k${i} HTTP/1.1\r\nHost: 127.0.0.1:${originPort}\r\n\r\n`),
    );
    const body = await readResponse(conn, state);
    if (body !== `ok /k${i}`) failures++;
  }
  conn.close();
}));
const t1 = performance.now();
next = 0;
await Promise.all(Array.from({ length: CONNS }, async () => {
  while (next < FRESH) {
    const i = next++;
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
    const state = { buf: new Uint8Array(4096), len: 0 };
    await conn.write(
      enc.encode(
        `GET http://127.0.0.1:${originPort}/f${i} HTTP/1.1\r\nHost: 127.0.0.1:${originPort}\r\nConnection: close\r\n\r\n`,
      ),
    );
    const body = await readResponse(conn, state);
    if (body !== `ok /f${i}`) failures++;
    conn.close();
  }
}));
const t2 = performance.now();
// Let the proxy close what the clients closed (and V8 shrink its heap when idle), then compare.
await new Promise((r) => setTimeout(r, 1000));
const after = { fds: fds(), rss: rssMiB() };
await new Promise((r) => setTimeout(r, 10_000));
const later = rssMiB();
console.log(`| phase | requests | seconds | req/s |`);
console.log(`| --- | --- | --- | --- |`);
console.log(
  `| keep-alive (${CONNS} conns) | ${KEEPALIVE} | ${((t1 - t0) / 1000).toFixed(1)} | ${
    (KEEPALIVE / (t1 - t0) * 1000).toFixed(0)
  } |`,
);
console.log(
  `| new connection each | ${FRESH} | ${((t2 - t1) / 1000).toFixed(1)} | ${(FRESH / (t2 - t1) * 1000).toFixed(0)} |`,
);
console.log(`\nfailed responses: ${failures}`);
console.log(`proxy open fds: ${baseline.fds} before, ${after.fds} after (pooled upstream connections may remain)`);
console.log(
  `proxy RSS: ${baseline.rss.toFixed(1)} MiB before, ${after.rss.toFixed(1)} MiB 1 s after, ${
    later.toFixed(1)
  } MiB 11 s after`,
);
proxy.kill("SIGTERM");
await proxy.status;
await origin.shutdown();
Deno.exit(failures === 0 ? 0 : 1);
