/**
 * The hooks benchmark: the cost of the hook API in a real proxy process. nginx
 * is the origin and wrk the load (100-byte responses, keep-alive, every body
 * compared); the proxy runs pinned to CPU 0 with each hook variant in turn,
 * interleaved over several rounds (the order reversed every other round), and the medians of requests per second and
 * per proxy CPU-second are compared with the hook-free run of the same round.
 * Two more variants run the built-in access log (json and squid lines, to stdout,
 * which is /dev/null here): its cost against logging off. Peak RSS is the proxy's
 * VmHWM at the end of each run (warm-up included), median over the rounds.
 *
 *   deno task bench:hooks [--rounds 5] [--duration 5] [--connections 50] [--baseline DIR] [--only log,headers]
 *     [--runtime-flags="--no-code-cache --v8-flags=..."]
 *
 * --baseline DIR: also run DIR/main.ts (another checkout, e.g. `git worktree add
 * /tmp/before <commit>`) as the variant "baseline" (the figures the hook-free
 * path must stay within 3% of).
 * --runtime-flags=FLAGS: also run this main.ts with FLAGS (space-separated Deno
 * flags) instead of the README's runtime flags, as the variant "runtime flags":
 * how another V8 configuration compares, in the same rounds.
 * Needs nginx and wrk; loopback only; every process started is stopped by its PID.
 */
import { parseArgs } from "node:util";
import {
  cpuSeconds,
  freePort,
  median,
  pinned,
  PINNING,
  procStatusKiB,
  RUN_FLAGS,
  waitForPort,
  which,
  WRK_CHECK_LUA,
} from "./util.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "5" },
    duration: { type: "string", default: "5" },
    connections: { type: "string", default: "50" },
    baseline: { type: "string" },
    only: { type: "string" },
    "runtime-flags": { type: "string" },
  },
});
const ROUNDS = Number(values.rounds);
const DURATION = Number(values.duration);
const CONNECTIONS = Number(values.connections);
const NGINX = which("nginx");
const WRK = which("wrk");
if (!NGINX || !WRK) {
  console.error("bench:hooks needs nginx and wrk (Debian: apt-get install nginx wrk)");
  Deno.exit(2);
}

const here = (path: string) => new URL(path, import.meta.url).pathname;
const main = here("../main.ts");
const OFF = ["--log-format", "none"];
const variants: { name: string; main: string; args: string[]; flags?: string[] }[] = [
  // The baseline gets OFF too: an older main.ts with the access log logs json to stdout by default.
  ...(values.baseline ? [{ name: "baseline", main: `${values.baseline}/main.ts`, args: OFF }] : []),
  { name: "no hooks", main, args: OFF },
  // Metrics are counted by default ("no hooks" has them): their cost is "no hooks" against this one.
  { name: "no metrics", main, args: [...OFF, "--no-metrics"] },
  ...(values["runtime-flags"] !== undefined
    ? [{ name: "runtime flags", main, args: OFF, flags: values["runtime-flags"].split(/\s+/).filter(Boolean) }]
    : []),
  { name: "sync no-op onRequest + onResponse", main, args: [...OFF, "--hooks", here("hooks/noop.ts")] },
  { name: "headers touched", main, args: [...OFF, "--hooks", here("hooks/headers.ts")] },
  { name: "async no-op onRequest + onResponse", main, args: [...OFF, "--hooks", here("hooks/async_noop.ts")] },
  // The access log (issue 10): the built-in onExchangeEnd consumer, to /dev/null (stdout).
  { name: "access log json", main, args: ["--log-format", "json"] },
  { name: "access log squid", main, args: ["--log-format", "squid"] },
].filter((v) =>
  !values.only || v.name === "no hooks" || v.name === "baseline" || v.name === "runtime flags" ||
  values.only.split(",").some((s) => v.name.includes(s))
);

const tmp = await Deno.makeTempDir({ prefix: "waypost-bench-hooks-" });
const www = `${tmp}/www`;
await Deno.mkdir(www);
await Deno.writeFile(`${www}/small`, new Uint8Array(100).map((_, i) => 0x41 + (i % 26)));
const originPort = freePort();
await Deno.writeTextFile(
  `${tmp}/nginx.conf`,
  `daemon off; master_process off; worker_processes 1; pid ${tmp}/nginx.pid;
error_log ${tmp}/nginx-error.log warn;
events { worker_connections 8192; }
http { access_log off; sendfile on; tcp_nodelay on; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path ${tmp}/b; proxy_temp_path ${tmp}/p; fastcgi_temp_path ${tmp}/f;
  uwsgi_temp_path ${tmp}/u; scgi_temp_path ${tmp}/s;
  server { listen 127.0.0.1:${originPort} backlog=4096; root ${www}; location / { } } }
`,
);
await Deno.writeTextFile(
  `${tmp}/check.lua`,
  WRK_CHECK_LUA,
);

async function wrk(port: number, seconds: number): Promise<{ good: number; bad: number }> {
  const [c, a] = pinned(1, WRK!, [
    "-t1",
    `-c${CONNECTIONS}`,
    `-d${seconds}s`,
    "--latency",
    "-s",
    `${tmp}/check.lua`,
    `http://127.0.0.1:${port}`,
    "--",
    `http://127.0.0.1:${originPort}/small`,
    `127.0.0.1:${originPort}`,
    `${www}/small`,
  ]);
  const out = await new Deno.Command(c, { args: a, stdout: "piped", stderr: "piped" }).output();
  const m = /RESULT (\d+) (\d+) (\d+)/.exec(new TextDecoder().decode(out.stdout));
  if (!m) throw new Error("wrk failed");
  return { good: Number(m[1]) - Number(m[2]), bad: Number(m[2]) };
}

const nginx = new Deno.Command(...(() => {
  const [c, a] = pinned(1, NGINX, ["-c", `${tmp}/nginx.conf`]);
  return [c, { args: a, stdout: "null", stderr: "null" }] as const;
})()).spawn();
const results = new Map<string, { rps: number[]; perCpu: number[]; peakMiB: number[]; bad: number }>();

try {
  await waitForPort(originPort);
  for (let round = 1; round <= ROUNDS; round++) {
    // Odd rounds run the variants in order, even rounds in reverse: no variant always goes first.
    for (const v of round % 2 === 1 ? variants : [...variants].reverse()) {
      const port = freePort();
      const args = ["run", "--allow-net", "--allow-read", ...(v.flags ?? RUN_FLAGS), v.main];
      args.push("--port", String(port), "--log-level", "error", "--max-connections-per-client", "4096");
      args.push(...v.args);
      const [c, a] = pinned(0, Deno.execPath(), args);
      const proxy = new Deno.Command(c, { args: a, stdout: "null", stderr: "null" }).spawn();
      try {
        await waitForPort(port);
        await wrk(port, 1); // warm-up (JIT), not counted
        const cpu0 = cpuSeconds(proxy.pid);
        const r = await wrk(port, DURATION);
        const cpu = cpuSeconds(proxy.pid) - cpu0;
        const entry = results.get(v.name) ?? { rps: [], perCpu: [], peakMiB: [], bad: 0 };
        entry.rps.push(r.good / DURATION);
        entry.perCpu.push(r.good / cpu);
        entry.peakMiB.push(procStatusKiB(proxy.pid, "VmHWM") / 1024);
        entry.bad += r.bad;
        results.set(v.name, entry);
        console.error(
          `round ${round} ${v.name}: ${Math.round(r.good / DURATION)} req/s, ${Math.round(r.good / cpu)} per CPU-s`,
        );
      } finally {
        proxy.kill("SIGTERM");
        await proxy.status;
      }
    }
  }
} finally {
  nginx.kill("SIGTERM");
  await nginx.status;
  await Deno.remove(tmp, { recursive: true });
}

const ref = results.get("no hooks")!;
console.log(
  `\n${CONNECTIONS} keep-alive connections, 100-byte responses, ${DURATION} s x ${ROUNDS} rounds, ${
    PINNING ? "proxy pinned to CPU 0" : "not pinned"
  }; medians, ratio to "no hooks":\n`,
);
console.log(`Runtime flags: ${RUN_FLAGS.join(" ")}`);
if (values["runtime-flags"] !== undefined) console.log(`"runtime flags": ${values["runtime-flags"] || "(none)"}`);
console.log("");
console.log("| variant | req/s | req per proxy CPU-s | ratio (per CPU-s) | peak RSS MiB | invalid |");
console.log("| --- | --- | --- | --- | --- | --- |");
for (const [name, r] of results) {
  const perCpu = median(r.perCpu);
  console.log(
    `| ${name} | ${Math.round(median(r.rps)).toLocaleString("en")} | ${Math.round(perCpu).toLocaleString("en")} | ${
      (perCpu / median(ref.perCpu)).toFixed(3)
    } | ${median(r.peakMiB).toFixed(1)} | ${r.bad} |`,
  );
}
