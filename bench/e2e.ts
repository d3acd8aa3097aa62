/**
 * End-to-end benchmark: nginx as the origin, wrk as the load, every response
 * validated (status 200 and the exact body), run against a direct connection,
 * this proxy, and whichever of tinyproxy and squid are installed, in one run.
 * Prints a markdown table with ratios to direct and the proxy's CPU cost.
 *
 *   deno task bench:e2e [--duration 5] [--connections 50] [--install]
 *
 * --install: `apt-get install -y nginx wrk` (as root) when they are missing.
 * Pinning (when `taskset` exists): proxies on CPU 0, nginx and wrk on CPU 1.
 * Loopback only; every process started is stopped by its PID.
 */
import { parseArgs } from "node:util";
import { cpuSeconds, freePort, pinned, PINNING, RUN_FLAGS, waitForPort, which, WRK_CHECK_LUA } from "./util.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    duration: { type: "string", default: "5" },
    connections: { type: "string", default: "50" },
    install: { type: "boolean", default: false },
  },
});
const DURATION = Number(values.duration);
const CONNECTIONS = Number(values.connections);

if ((!which("nginx") || !which("wrk")) && values.install) {
  const apt = (args: string[]) =>
    new Deno.Command("apt-get", { args, env: { DEBIAN_FRONTEND: "noninteractive" } }).output();
  await apt(["update", "-qq"]);
  await apt(["install", "-y", "-qq", "nginx", "wrk"]);
}
const NGINX = which("nginx");
const WRK = which("wrk");
if (!NGINX || !WRK) {
  console.error("bench:e2e needs nginx and wrk (Debian: apt-get install nginx wrk, or pass --install)");
  Deno.exit(2);
}

const tmp = await Deno.makeTempDir({ prefix: "waypost-bench-" });
const www = `${tmp}/www`;
await Deno.mkdir(www);
const small = new Uint8Array(100).map((_, i) => 0x41 + (i % 26));
const k64 = new Uint8Array(65536).map((_, i) => 0x61 + (i % 26));
await Deno.writeFile(`${www}/small`, small);
await Deno.writeFile(`${www}/64k`, k64);
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
// wrk script: absolute-form target through a proxy, every body compared with the file.
await Deno.writeTextFile(
  `${tmp}/check.lua`,
  WRK_CHECK_LUA,
);

const children: Deno.ChildProcess[] = [];
function spawn(cpu: number, cmd: string, args: string[]): Deno.ChildProcess {
  const [c, a] = pinned(cpu, cmd, args);
  const child = new Deno.Command(c, { args: a, stdout: "null", stderr: "null" }).spawn();
  children.push(child);
  return child;
}

spawn(1, NGINX, ["-c", `${tmp}/nginx.conf`]);
await waitForPort(originPort);

interface Target {
  name: string;
  port: number | null;
  pid: number | null;
}
const targets: Target[] = [{ name: "direct", port: null, pid: null }];

const oursPort = freePort();
const ours = spawn(0, Deno.execPath(), [
  "run",
  "--allow-net",
  ...RUN_FLAGS,
  new URL("../main.ts", import.meta.url).pathname,
  "--port",
  String(oursPort),
  "--log-level",
  "error",
]);
await waitForPort(oursPort);
targets.push({ name: "waypost", port: oursPort, pid: ours.pid });

const TINYPROXY = which("tinyproxy");
if (TINYPROXY) {
  const port = freePort();
  await Deno.writeTextFile(
    `${tmp}/tinyproxy.conf`,
    `Port ${port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 4096\nLogLevel Critical\nLogFile "${tmp}/tinyproxy.log"\nSyslog Off\nAllow 127.0.0.1\nXTinyproxy No\n`,
  );
  const child = spawn(0, TINYPROXY, ["-d", "-c", `${tmp}/tinyproxy.conf`]);
  await waitForPort(port);
  targets.push({ name: "tinyproxy", port, pid: child.pid });
}
const SQUID = which("squid");
if (SQUID && Deno.uid?.() !== 0) {
  const port = freePort();
  await Deno.writeTextFile(
    `${tmp}/squid.conf`,
    `http_port 127.0.0.1:${port}\npid_filename ${tmp}/squid.pid\ncache deny all\ncache_mem 0 MB\naccess_log none\ncache_log /dev/null\nacl l src 127.0.0.1/32\nhttp_access allow l\nhttp_access deny all\n`,
  );
  const child = spawn(0, SQUID, ["-N", "-f", `${tmp}/squid.conf`]);
  await waitForPort(port);
  targets.push({ name: "squid", port, pid: child.pid });
} else if (SQUID) {
  console.error("squid found but skipped: it refuses to run as root without a cache user setup");
}

async function load(target: Target, path: string, file: string) {
  const url = target.port === null ? `http://127.0.0.1:${originPort}` : `http://127.0.0.1:${target.port}`;
  const wrkPath = target.port === null ? path : `http://127.0.0.1:${originPort}${path}`;
  const [c, a] = pinned(1, WRK!, [
    "-t1",
    `-c${CONNECTIONS}`,
    `-d${DURATION}s`,
    "--latency",
    "-s",
    `${tmp}/check.lua`,
    url,
    "--",
    wrkPath,
    `127.0.0.1:${originPort}`,
    file,
  ]);
  const cpu0 = target.pid ? cpuSeconds(target.pid) : 0;
  const out = await new Deno.Command(c, { args: a, stdout: "piped", stderr: "piped" }).output();
  const cpu = target.pid ? cpuSeconds(target.pid) - cpu0 : 0;
  const text = new TextDecoder().decode(out.stdout);
  const m = /RESULT (\d+) (\d+) (\d+)/.exec(text);
  if (!m) throw new Error(`wrk failed for ${target.name}: ${text}`);
  const requests = Number(m[1]);
  const good = requests - Number(m[2]); // only validated responses count
  return { rps: good / DURATION, p99ms: Number(m[3]) / 1000, perCpu: cpu > 0 ? good / cpu : 0, bad: requests - good };
}

try {
  const rows: string[] = [];
  let base = { small: 0, k64: 0 };
  for (const t of targets) {
    const s = await load(t, "/small", `${www}/small`);
    const k = await load(t, "/64k", `${www}/64k`);
    if (t.name === "direct") base = { small: s.rps, k64: k.rps };
    const r = (x: number, b: number) => `${Math.round(x).toLocaleString("en")} (${(x / b).toFixed(2)})`;
    rows.push(
      `| ${t.name} | ${r(s.rps, base.small)} | ${s.p99ms.toFixed(2)} | ${r(k.rps, base.k64)} | ${
        t.pid ? Math.round(s.perCpu).toLocaleString("en") : ""
      } | ${s.bad + k.bad} |`,
    );
  }
  console.log(`\n${CONNECTIONS} keep-alive connections, ${DURATION} s each, ${PINNING ? "pinned" : "not pinned"}:\n`);
  console.log("| target | 100 B req/s (ratio) | p99 ms | 64 KiB req/s (ratio) | 100 B req per proxy CPU-s | invalid |");
  console.log("| --- | --- | --- | --- | --- | --- |");
  for (const row of rows) console.log(row);
} finally {
  for (const child of children) {
    try {
      child.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    await child.status;
  }
  await Deno.remove(tmp, { recursive: true });
}
