/**
 * Memory per idle connection, the way the shared harness measures it: a fresh
 * proxy process, its RSS (VmRSS) before, N connections opened and left idle
 * (plain TCP that never sends a byte, or kept alive after one request through
 * the proxy to a local origin), its RSS once it has settled; KiB per connection
 * = growth / N. Several rounds, medians; beside waypost the runtime's floor
 * (bench/floor_idle.ts: a pending one-byte read per connection and nothing else).
 *
 *   deno task bench:idle [--conns 2000] [--rounds 3]
 *
 * Both run with the README's runtime flags (bench/util.ts RUN_FLAGS).
 *
 * Loopback only; every process started is stopped by its PID.
 */
import { parseArgs } from "node:util";
import { freePort, median, procStatusKiB, RUN_FLAGS, waitForPort } from "./util.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    conns: { type: "string", default: "2000" },
    rounds: { type: "string", default: "3" },
  },
});
const CONNS = Number(values.conns);
const ROUNDS = Number(values.rounds);
const here = (path: string) => new URL(path, import.meta.url).pathname;

/** The README's command line (flags the harness run uses too). */
const targets: { name: string; args: (port: number) => string[]; proxy: boolean }[] = [
  {
    name: "waypost",
    proxy: true,
    args: (port) => [
      "run",
      "--allow-net",
      ...RUN_FLAGS,
      here("../main.ts"),
      "--port",
      String(port),
      "--max-connections-per-client",
      String(CONNS + 100),
      "--log-level",
      "warn",
      "--log-format",
      "none",
    ],
  },
  {
    name: "floor (bench/floor_idle.ts)",
    proxy: false,
    args: (
      port,
    ) => [
      "run",
      "--allow-net",
      ...RUN_FLAGS,
      here("floor_idle.ts"),
      String(port),
    ],
  },
];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// The origin for keep-alive connections: a 100-byte answer to anything.
const originPort = freePort();
const origin = Deno.serve(
  { hostname: "127.0.0.1", port: originPort, onListen() {} },
  () => new Response("x".repeat(100)),
);

/** Reads one response with a Content-Length body; true when it was a 200. */
async function readResponse(conn: Deno.Conn): Promise<boolean> {
  const buf = new Uint8Array(4096);
  let text = "";
  while (true) {
    const n = await conn.read(buf);
    if (n === null) return false;
    text += new TextDecoder("latin1").decode(buf.subarray(0, n));
    const end = text.indexOf("\r\n\r\n");
    if (end === -1) continue;
    const length = Number(/content-length:\s*(\d+)/i.exec(text.slice(0, end))?.[1] ?? 0);
    if (text.length >= end + 4 + length) return text.startsWith("HTTP/1.1 200");
  }
}

async function measure(target: typeof targets[number], keepAlive: boolean): Promise<number> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), { args: target.args(port), stdout: "null", stderr: "null" }).spawn();
  const conns: Deno.Conn[] = [];
  try {
    await waitForPort(port);
    await sleep(500);
    const before: number[] = [];
    for (let i = 0; i < 3; i++, await sleep(200)) before.push(procStatusKiB(child.pid, "VmRSS"));
    const request = new TextEncoder().encode(
      `GET ${
        target.proxy ? `http://127.0.0.1:${originPort}` : ""
      }/small HTTP/1.1\r\nHost: 127.0.0.1:${originPort}\r\n\r\n`,
    );
    for (let i = 0; i < CONNS; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conns.push(conn);
      if (keepAlive) {
        await conn.write(request);
        if (!await readResponse(conn)) throw new Error(`${target.name}: no 200 on connection ${i}`);
      }
    }
    // Settled: five samples 250 ms apart within 64 KiB (as the harness waits), at most 8 s.
    const samples: number[] = [];
    for (let i = 0; i < 32; i++) {
      samples.push(procStatusKiB(child.pid, "VmRSS"));
      const last = samples.slice(-5);
      if (last.length === 5 && Math.max(...last) - Math.min(...last) <= 64) break;
      await sleep(250);
    }
    return (samples.at(-1)! - median(before)) / CONNS;
  } finally {
    for (const conn of conns) conn.close();
    child.kill("SIGTERM");
    await child.status;
  }
}

const rows: string[] = [];
for (const target of targets) {
  const tcp: number[] = [];
  const ka: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    tcp.push(await measure(target, false));
    ka.push(await measure(target, true));
    console.error(
      `round ${round + 1} ${target.name}: TCP ${tcp.at(-1)!.toFixed(2)}, keep-alive ${ka.at(-1)!.toFixed(2)} KiB/conn`,
    );
  }
  rows.push(`| ${target.name} | ${median(tcp).toFixed(1)} | ${median(ka).toFixed(1)} |`);
}
await origin.shutdown();
console.log(`\n${CONNS} idle connections, ${ROUNDS} rounds, medians of RSS growth per connection:\n`);
console.log("| target | idle TCP KiB/conn | idle keep-alive KiB/conn |\n| --- | --- | --- |");
for (const row of rows) console.log(row);
