/**
 * Tunnel throughput: moves N bytes (default 1 GiB) over loopback from a raw TCP
 * origin to a client, directly and through a CONNECT tunnel of the proxy (run as
 * its own process), several rounds, and prints medians, the ratio to direct, and
 * the proxy's peak RSS (VmHWM).
 *
 *   deno run -A bench/tunnel.ts [--bytes 1073741824] [--rounds 3]
 */
import { parseArgs } from "node:util";
import { median, procStatusKiB, RUN_FLAGS } from "./util.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    bytes: { type: "string", default: String(1 << 30) },
    rounds: { type: "string", default: "3" },
    pin: { type: "boolean", default: false },
  },
});
const TOTAL = Number(values.bytes);
const ROUNDS = Number(values.rounds);

// Origin: each connection receives TOTAL bytes, then FIN.
const origin = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const originPort = (origin.addr as Deno.NetAddr).port;
(async () => {
  const block = new Uint8Array(256 * 1024).fill(0x61);
  for await (const conn of origin) {
    (async () => {
      let left = TOTAL;
      try {
        while (left > 0) {
          const n = await conn.write(left >= block.length ? block : block.subarray(0, left));
          left -= n;
        }
        await conn.closeWrite();
        const sink = new Uint8Array(1024);
        while ((await conn.read(sink)) !== null) { /* wait for the client's FIN */ }
      } catch { /* a failed round shows as a short count */ }
      conn.close();
    })();
  }
})();

// --pin: the proxy runs on CPU 0 (run this script itself under `taskset -c 1`), as in the
// shared harness, so the proxy and the endpoints never compete for a core.
const proxy = new Deno.Command(values.pin ? "taskset" : Deno.execPath(), {
  args: [
    ...(values.pin ? ["-c", "0", Deno.execPath()] : []),
    "run",
    "--allow-net",
    ...RUN_FLAGS,
    new URL("../main.ts", import.meta.url).pathname,
    "--port",
    "0",
    "--connect-ports",
    "*",
    "--log-level",
    "warn",
  ],
  stdout: "piped",
  stderr: "inherit",
}).spawn();
const reader = proxy.stdout.getReader();
const first = new TextDecoder().decode((await reader.read()).value);
const proxyPort = Number(/:(\d+)\s*$/m.exec(first)![1]);
reader.releaseLock();
proxy.stdout.cancel();

async function receive(conn: Deno.Conn): Promise<number> {
  const buf = new Uint8Array(256 * 1024);
  let got = 0;
  while (true) {
    const n = await conn.read(buf);
    if (n === null) break;
    got += n;
  }
  return got;
}

async function direct(): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: originPort });
  const t0 = performance.now();
  const got = await receive(conn);
  const dt = performance.now() - t0;
  conn.close();
  if (got !== TOTAL) throw new Error(`direct: got ${got} of ${TOTAL}`);
  return TOTAL / dt / 1000;
}

async function tunnel(): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  await conn.write(
    new TextEncoder().encode(`CONNECT 127.0.0.1:${originPort} HTTP/1.1\r\nHost: 127.0.0.1:${originPort}\r\n\r\n`),
  );
  const head = new Uint8Array(4096);
  let headText = "";
  let extra = 0;
  while (!headText.includes("\r\n\r\n")) {
    const n = await conn.read(head);
    if (n === null) throw new Error("proxy closed");
    headText += new TextDecoder("latin1").decode(head.subarray(0, n));
  }
  if (!headText.startsWith("HTTP/1.1 200")) throw new Error(headText);
  extra = headText.length - (headText.indexOf("\r\n\r\n") + 4);
  const t0 = performance.now();
  const got = extra + await receive(conn);
  const dt = performance.now() - t0;
  conn.close();
  if (got !== TOTAL) throw new Error(`tunnel: got ${got} of ${TOTAL}`);
  return TOTAL / dt / 1000;
}

const hwm = (pid: number) => procStatusKiB(pid, "VmHWM") / 1024;

const d: number[] = [];
const t: number[] = [];
for (let i = 0; i < ROUNDS; i++) {
  d.push(await direct());
  t.push(await tunnel());
}
const md = median(d);
const mt = median(t);
console.log(`| path | MB/s (median of ${ROUNDS}) | ratio to direct |`);
console.log(`| --- | --- | --- |`);
console.log(`| direct | ${md.toFixed(0)} | 1.00 |`);
console.log(`| CONNECT through waypost | ${mt.toFixed(0)} | ${(mt / md).toFixed(2)} |`);
console.log(`\nproxy peak RSS: ${hwm(proxy.pid).toFixed(1)} MiB; ${(TOTAL / 2 ** 20).toFixed(0)} MiB per round`);
proxy.kill("SIGTERM");
await proxy.status;
origin.close();
Deno.exit(0);
