/**
 * Where the peak memory goes: the shared harness's sequence replayed against
 * one proxy process (start; 2 s of small keep-alive requests; 1 s of 64 KiB
 * responses; 8 x 1 MiB over HTTP and 8 through a CONNECT tunnel to a TLS
 * origin; then VmHWM reset and 10 s of small requests, whose peak the harness
 * reports), with the resident memory after each stage split into the `deno`
 * binary's pages, anonymous memory (the V8 heap, stacks), the malloc heap and
 * the rest (`/proc/PID/smaps`), and V8's own figures from `/metrics`.
 *
 *   deno task bench:memory [--rounds 3] [--runtime-flags="--no-code-cache --v8-flags=..."] [--ceiling] [--gauges]
 *
 * --runtime-flags=FLAGS: Deno flags instead of the README's (bench/util.ts RUN_FLAGS).
 * --ceiling: measure bench/ceiling.ts (the throwaway forwarder) instead; it has
 * no CONNECT and no /metrics, so those stages show nothing of it.
 * --gauges: also read V8's heap figures from /metrics after each stage. Off by
 * default: the harness never asks for /metrics, and the first request loads the
 * page code (about 3 MiB), which would be counted in every figure after it.
 * "malloc [heap]" is the main malloc arena only; other threads' arenas and large
 * allocations are anonymous mappings.
 * "deno caches": Deno's SQLite caches in DENO_DIR (dep_analysis_cache_v2 and the
 * like), memory-mapped by the runtime: how much of them stays resident grows
 * with the cache's history (0.7 MiB with a cache six sessions old, nothing with
 * a fresh DENO_DIR), not with the proxy. `DENO_DIR=$(mktemp -d) deno task
 * bench:memory` measures without it.
 * Needs nginx, wrk and curl; loopback only; every process started is stopped by its PID.
 */
import { parseArgs } from "node:util";
import {
  cpuSeconds,
  freePort,
  median,
  pinned,
  procStatusKiB,
  RUN_FLAGS,
  waitForPort,
  which,
  WRK_CHECK_LUA,
} from "./util.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "3" },
    "runtime-flags": { type: "string" },
    ceiling: { type: "boolean", default: false },
    gauges: { type: "boolean", default: false },
  },
});
const ROUNDS = Number(values.rounds);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) {
  console.error(`--rounds must be a positive integer, not ${values.rounds}`);
  Deno.exit(2);
}
const FLAGS = values["runtime-flags"]?.split(/\s+/).filter(Boolean) ?? [...RUN_FLAGS];
const NGINX = which("nginx"), WRK = which("wrk"), CURL = which("curl");
if (!NGINX || !WRK || !CURL) {
  console.error("bench:memory needs nginx, wrk and curl (Debian: apt-get install nginx wrk curl)");
  Deno.exit(2);
}

const fixtures = new URL("../tests/fixtures/", import.meta.url).pathname;
const tmp = await Deno.makeTempDir({ prefix: "waypost-bench-memory-" });
const www = `${tmp}/www`;
await Deno.mkdir(www);
for (const [name, size] of [["small", 100], ["64k", 65536], ["1m", 1 << 20]] as const) {
  await Deno.writeFile(`${www}/${name}`, new Uint8Array(size).map((_, i) => 0x41 + (i % 26)));
}
const httpPort = freePort(), tlsPort = freePort();
await Deno.writeTextFile(
  `${tmp}/nginx.conf`,
  `daemon off; master_process off; worker_processes 1; pid ${tmp}/nginx.pid; error_log ${tmp}/error.log warn;
events { worker_connections 4096; }
http { access_log off; sendfile on; tcp_nodelay on; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path ${tmp}/b; proxy_temp_path ${tmp}/p; fastcgi_temp_path ${tmp}/f; uwsgi_temp_path ${tmp}/u;
  scgi_temp_path ${tmp}/s;
  server { listen 127.0.0.1:${httpPort} backlog=4096; root ${www}; location / { } }
  server { listen 127.0.0.1:${tlsPort} ssl; ssl_certificate ${fixtures}leaf.pem;
    ssl_certificate_key ${fixtures}leaf-key.pem; root ${www}; location / { } } }
`,
);
await Deno.writeTextFile(
  `${tmp}/check.lua`,
  WRK_CHECK_LUA,
);

async function run(cmd: string, args: string[]): Promise<string> {
  const [c, a] = pinned(1, cmd, args);
  const out = await new Deno.Command(c, { args: a, stdout: "piped", stderr: "null" }).output();
  return new TextDecoder().decode(out.stdout);
}

/** wrk -c50 through the proxy for `seconds`: valid responses per second, invalid ones, p99 in ms. */
async function load(port: number, file: string, seconds: number) {
  const out = await run(WRK!, [
    "-t1",
    "-c50",
    `-d${seconds}s`,
    "-s",
    `${tmp}/check.lua`,
    `http://127.0.0.1:${port}`,
    "--",
    `http://127.0.0.1:${httpPort}/${file}`,
    `127.0.0.1:${httpPort}`,
    `${www}/${file}`,
  ]);
  const m = /RESULT (\d+) (\d+) (\d+)/.exec(out);
  if (!m) throw new Error(`wrk failed: ${out.slice(-300)}`);
  return { ok: Number(m[1]) - Number(m[2]), bad: Number(m[2]), p99: Number(m[3]) / 1000 };
}

/** Eight 1 MiB downloads through the proxy, over HTTP or through a CONNECT tunnel. */
async function downloads(port: number, tls: boolean): Promise<void> {
  const url = tls ? `https://127.0.0.1:${tlsPort}/1m` : `http://127.0.0.1:${httpPort}/1m`;
  const args = ["-sS", "--cacert", `${fixtures}ca.pem`, "-x", `http://127.0.0.1:${port}`, "-w", "%{http_code}\n"];
  for (let i = 0; i < 8; i++) args.push("-o", "/dev/null", url);
  const codes = (await run(CURL!, args)).trim().split("\n");
  if (codes.length !== 8 || codes.some((c) => c !== "200")) {
    console.log(`(${tls ? "CONNECT" : "HTTP"} downloads: status ${codes.join(" ")})`);
  }
}

/** Resident MiB by kind of mapping (`/proc/PID/smaps`). */
function split(pid: number): Record<string, number> {
  const out: Record<string, number> = { binary: 0, anonymous: 0, malloc: 0, caches: 0, other: 0 };
  const exe = Deno.readLinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, "");
  let kind = "other";
  for (const line of Deno.readTextFileSync(`/proc/${pid}/smaps`).split("\n")) {
    const m = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*?)\s*$/.exec(line);
    if (m) {
      const name = m[1].replace(/ \(deleted\)$/, "");
      kind = name === "" || name.startsWith("[anon:")
        ? "anonymous"
        : name === "[heap]"
        ? "malloc"
        : name === exe
        ? "binary"
        : /\/[a-z_]+_cache_v\d+(-shm|-wal)?$/.test(name)
        ? "caches"
        : "other";
    } else if (line.startsWith("Rss:")) out[kind] += Number(line.split(/\s+/)[1]) / 1024;
  }
  return out;
}

/** V8's heap figures from /metrics (MiB), or an empty record. */
async function gauges(port: number): Promise<Record<string, number>> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const out: Record<string, number> = {};
    for (const k of ["js_heap_total", "js_heap_used", "external_memory"]) {
      const m = new RegExp(`^waypost_${k}_bytes (\\S+)`, "m").exec(text);
      if (m) out[k] = Number(m[1]) / 2 ** 20;
    }
    return out;
  } catch {
    return {};
  }
}

const f1 = (n: number) => n.toFixed(1);
const nginx = new Deno.Command(...(() => {
  const [c, a] = pinned(1, NGINX, ["-c", `${tmp}/nginx.conf`]);
  return [c, { args: a, stdout: "null", stderr: "null" }] as const;
})()).spawn();
const peaks: number[] = [];
try {
  await waitForPort(httpPort);
  for (let round = 1; round <= ROUNDS; round++) {
    const port = freePort();
    const target = values.ceiling
      ? [new URL("ceiling.ts", import.meta.url).pathname, String(port), "4096"]
      : [new URL("../main.ts", import.meta.url).pathname, "--port", String(port), "--connect-ports", "*"];
    const extra = values.ceiling ? [] : ["--max-connections-per-client", "4096", "--log-level", "warn"];
    const [c, a] = pinned(0, Deno.execPath(), ["run", "--allow-net", ...FLAGS, ...target, ...extra]);
    const proxy = new Deno.Command(c, {
      args: [...a, ...(values.ceiling ? [] : ["--log-format", "none"])],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // Keep the proxy's stderr (the last 4 KiB) to say why it failed, if it does.
    let stderr = "";
    const drained = proxy.stderr.pipeTo(
      new WritableStream({ write: (chunk) => void (stderr = (stderr + new TextDecoder().decode(chunk)).slice(-4096)) }),
    ).catch(() => {});
    let stage = "start";
    try {
      await waitForPort(port);
      console.log(`\nround ${round}${values.ceiling ? " (bench/ceiling.ts)" : ""}:`);
      console.log(
        "| stage | RSS | peak | deno binary | anonymous | malloc [heap] | deno caches | other | V8 heap total / used | external |",
      );
      console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
      const show = async (stage: string) => {
        // Memory first, all at once; /metrics (when asked for) only after it.
        const rss = procStatusKiB(proxy.pid, "VmRSS") / 1024, hwm = procStatusKiB(proxy.pid, "VmHWM") / 1024;
        const s = split(proxy.pid);
        const g = values.gauges ? await gauges(port) : {};
        console.log(
          `| ${stage} | ${f1(rss)} | ${f1(hwm)} | ${f1(s.binary)} | ${f1(s.anonymous)} | ${f1(s.malloc)} | ${
            f1(s.caches)
          } | ${f1(s.other)} | ${
            g.js_heap_total === undefined ? "-" : `${f1(g.js_heap_total)} / ${f1(g.js_heap_used)}`
          } | ${g.external_memory === undefined ? "-" : f1(g.external_memory)} |`,
        );
      };
      await show("start");
      stage = "2 s small";
      await load(port, "small", 2);
      await show("2 s small");
      stage = "1 s 64 KiB";
      await load(port, "64k", 1);
      await show("1 s 64 KiB");
      stage = "8 MiB HTTP";
      await downloads(port, false);
      await show("8 MiB HTTP");
      stage = "8 MiB CONNECT";
      await downloads(port, true);
      await show("8 MiB CONNECT");
      stage = "10 s small (a)";
      await Deno.writeTextFile(`/proc/${proxy.pid}/clear_refs`, "5"); // VmHWM := VmRSS, as the harness does
      const cpu0 = cpuSeconds(proxy.pid);
      const r = await load(port, "small", 10);
      const cpu = cpuSeconds(proxy.pid) - cpu0;
      const peak = procStatusKiB(proxy.pid, "VmHWM") / 1024;
      await show("10 s small (a)");
      peaks.push(peak);
      console.log(
        `(a): ${Math.round(r.ok / 10)} req/s, ${
          Math.round(r.ok / cpu)
        } per CPU-s, p99 ${r.p99} ms, ${r.bad} invalid, ` +
          `peak ${f1(peak)} MiB`,
      );
    } catch (error) {
      throw new Error(`round ${round}, stage "${stage}": ${error}\nproxy stderr: ${stderr.trim() || "(none)"}`);
    } finally {
      try {
        proxy.kill("SIGTERM");
      } catch {
        // it has exited already
      }
      await proxy.status;
      await drained;
    }
  }
} finally {
  try {
    nginx.kill("SIGTERM");
  } catch {
    // it has exited already
  }
  await nginx.status;
  await Deno.remove(tmp, { recursive: true });
}
console.log(
  `\npeak RSS during (a), median of ${ROUNDS}: ${f1(median(peaks))} MiB; ` +
    `highest ${f1(Math.max(...peaks))} (the shared harness reports the highest of its rounds)`,
);
