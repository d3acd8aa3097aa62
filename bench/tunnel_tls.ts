/**
 * TLS through a CONNECT tunnel, the way clients use it: curl downloads a 1 GiB
 * file from nginx over HTTPS, directly and through the proxy (`curl -x`), several
 * rounds; prints medians, the ratio to direct and the proxy's peak RSS (VmHWM).
 * The proxy is pinned to CPU 0 and nginx + curl to CPU 1 when `taskset` exists.
 *
 *   deno task bench:tunnel:tls [--rounds 3] [--floor]
 *
 * --floor: also the minimal Deno relay (bench/tunnel_floor.ts), in the same rounds:
 * what the runtime allows for the same transfer.
 *
 * Needs nginx and curl (Debian: apt-get install nginx curl). Loopback only.
 */
import { parseArgs } from "node:util";
import { freePort, median, pinned, PINNING, procStatusKiB, RUN_FLAGS, waitForPort, which } from "./util.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { rounds: { type: "string", default: "3" }, floor: { type: "boolean", default: false } },
});
const ROUNDS = Number(values.rounds);

const NGINX = which("nginx");
const CURL = which("curl");
if (!NGINX || !CURL) {
  console.error("bench:tunnel:tls needs nginx and curl (apt-get install nginx curl)");
  Deno.exit(2);
}

const fixtures = new URL("../tests/fixtures/", import.meta.url).pathname;
const tmp = await Deno.makeTempDir({ prefix: "waypost-tls-" });
await Deno.mkdir(`${tmp}/www`);
const big = await Deno.open(`${tmp}/www/big`, { write: true, create: true });
await big.truncate(2 ** 30); // sparse: served from the page cache, no disk I/O
big.close();
const originPort = freePort();
await Deno.writeTextFile(
  `${tmp}/nginx.conf`,
  `daemon off; master_process off; worker_processes 1; pid ${tmp}/nginx.pid; error_log ${tmp}/error.log warn;
events { worker_connections 1024; }
http { access_log off; sendfile on; tcp_nodelay on;
  client_body_temp_path ${tmp}/b; proxy_temp_path ${tmp}/p; fastcgi_temp_path ${tmp}/f; uwsgi_temp_path ${tmp}/u;
  scgi_temp_path ${tmp}/s;
  server { listen 127.0.0.1:${originPort} ssl; ssl_certificate ${fixtures}leaf.pem;
    ssl_certificate_key ${fixtures}leaf-key.pem; root ${tmp}/www; location / { } } }
`,
);
const children: Deno.ChildProcess[] = [];
function spawn(cpu: number, cmd: string, args: string[]): Deno.ChildProcess {
  const [c, a] = pinned(cpu, cmd, args);
  const child = new Deno.Command(c, { args: a, stdout: "null", stderr: "null" }).spawn();
  children.push(child);
  return child;
}
spawn(1, NGINX, ["-c", `${tmp}/nginx.conf`]);
const proxyPort = freePort();
const proxy = spawn(0, Deno.execPath(), [
  "run",
  "--allow-net",
  ...RUN_FLAGS,
  new URL("../main.ts", import.meta.url).pathname,
  "--port",
  String(proxyPort),
  "--connect-ports",
  "*",
  "--log-level",
  "warn",
]);

const floorPort = freePort();
if (values.floor) {
  spawn(0, Deno.execPath(), [
    "run",
    "--allow-net",
    new URL("tunnel_floor.ts", import.meta.url).pathname,
    String(floorPort),
  ]);
}

async function download(viaPort: number | null): Promise<number> {
  const [c, a] = pinned(1, CURL!, [
    "-s",
    "--cacert",
    `${fixtures}ca.pem`,
    ...(viaPort !== null ? ["-x", `http://127.0.0.1:${viaPort}`] : []),
    "-o",
    "/dev/null",
    "-w",
    "%{http_code} %{size_download} %{speed_download}",
    `https://localhost:${originPort}/big`,
  ]);
  const out = new TextDecoder().decode((await new Deno.Command(c, { args: a, stdout: "piped" }).output()).stdout);
  const [status, size, speed] = out.split(" ");
  if (status !== "200" || Number(size) !== 2 ** 30) throw new Error(`bad download: ${out}`);
  return Number(speed) / 1e6;
}

try {
  await waitForPort(originPort);
  await waitForPort(proxyPort);
  if (values.floor) await waitForPort(floorPort);
  await download(null); // warm the page cache
  const direct: number[] = [];
  const tunnel: number[] = [];
  const floor: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    direct.push(await download(null));
    tunnel.push(await download(proxyPort));
    if (values.floor) floor.push(await download(floorPort));
  }
  const hwm = procStatusKiB(proxy.pid, "VmHWM") / 1024;
  const d = median(direct);
  const t = median(tunnel);
  console.log(`| path | MB/s (median of ${ROUNDS}) | ratio to direct |`);
  console.log("| --- | --- | --- |");
  console.log(`| curl → nginx (TLS), direct | ${d.toFixed(0)} | 1.00 |`);
  console.log(`| curl → waypost CONNECT → nginx (TLS) | ${t.toFixed(0)} | ${(t / d).toFixed(2)} |`);
  if (values.floor) {
    const f = median(floor);
    console.log(
      `| curl → minimal Deno relay (bench/tunnel_floor.ts) → nginx | ${f.toFixed(0)} | ${(f / d).toFixed(2)} |`,
    );
  }
  console.log(`\nproxy peak RSS: ${hwm.toFixed(1)} MiB; 1 GiB per download; ${PINNING ? "pinned" : "not pinned"}`);
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
