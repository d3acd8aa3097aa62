/**
 * Several instances behind a real load balancer: HAProxy (TCP mode, PROXY
 * protocol v2, HTTP health checks on /healthz) in front of two waypost CLI
 * instances, configured from `deploy/haproxy.cfg` itself (only the lines it
 * marks `# test:` are rewritten: ports, and faster health checks).
 *
 * It proves that requests and CONNECT tunnels pass through the balancer and
 * are spread over both instances; that each instance logs the real client
 * address and port (the client is bound to 127.0.0.2, while HAProxy connects
 * from 127.0.0.1, so only the PROXY header can have told them); and that a
 * SIGTERM'd instance answers /healthz 503 for its drain delay, is taken out
 * of rotation before its listener closes, finishes its in-flight requests
 * (longer than the drain delay) and exits 0, while every new request is
 * served.
 *
 * Clients are curl (it can bind the local address: `--interface 127.0.0.2`)
 * and raw sockets. Every wait is bounded; every child (HAProxy, the instances,
 * curl) is awaited with its pipes drained and, when still running at the end,
 * killed by PID. Skipped (not failed) where haproxy or curl is not on PATH or
 * 127.0.0.2 cannot be bound; `.ci/run` installs haproxy and curl from apt.
 */
import assert from "node:assert/strict";
import { Client, closedPort, deferred, type Message, ok, readBody, readHead, serve, startOrigin } from "./util.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const TEMPLATE = new URL("../deploy/haproxy.cfg", import.meta.url);
/** The client's own loopback address: not HAProxy's (127.0.0.1), so a log naming it proves PROXY works. */
const CLIENT_ADDRESS = "127.0.0.2";
/** The instances' --drain-delay and --grace, in ms (the flags say the same). */
const DRAIN_MS = 2_000;
const GRACE_MS = 5_000;
/** The origin's delay for /slow requests: longer than the drain delay, so they are still running at the listener close. */
const SLOW_MS = 3_000;
/** Bounds on every wait. */
const START_TIMEOUT_MS = 15_000;
const UP_TIMEOUT_MS = 10_000;
const LOG_TIMEOUT_MS = 5_000;
const EXIT_TIMEOUT_MS = DRAIN_MS + GRACE_MS + 5_000;
const CURL_MAX_SECONDS = 15;

/** The absolute path of `name` on PATH, or null. */
function which(name: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir === "") continue;
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch {
      // Not in this directory (or PATH not readable): try the next one.
    }
  }
  return null;
}

/** Whether a loopback address other than 127.0.0.1 can be bound (Linux: all of 127/8; macOS: only .1). */
function canBind(hostname: string): boolean {
  try {
    Deno.listen({ hostname, port: 0, transport: "tcp" }).close();
    return true;
  } catch {
    // Not configured here: the test is skipped with that reason.
    return false;
  }
}

/** HAProxy: on PATH, or in an sbin directory (Debian installs it in /usr/sbin, off a non-root user's PATH). */
function findHaproxy(): string | null {
  const found = which("haproxy");
  if (found !== null) return found;
  for (const path of ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]) {
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // Not there: try the next one.
    }
  }
  return null;
}

const HAPROXY = findHaproxy();
const CURL = which("curl");
const SKIP_REASON = HAPROXY === null
  ? "haproxy is not installed; CI installs it from apt"
  : CURL === null
  ? "curl is not installed; CI installs it from apt"
  : !canBind(CLIENT_ADDRESS)
  ? `${CLIENT_ADDRESS} cannot be bound on this machine`
  : null;
const SKIPPED = SKIP_REASON === null ? "" : ` (skipped: ${SKIP_REASON})`;

/** One line of `--log-format json` (the fields this test reads). */
interface LogRecord {
  client: string;
  client_port: number;
  kind: string;
  method: string;
  target: string;
  status: number;
  error: string | null;
}

/** Resolves with `promise`, or fails naming `what` after `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) =>
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms ${what}`)), ms)
  );
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `check` every 25 ms until it gives a value other than undefined; fails
 * naming `what` (and what `detail` says then) after `ms`.
 */
async function waitFor<T>(
  check: () => T | undefined | Promise<T | undefined>,
  ms: number,
  what: string,
  detail: () => string = () => "",
): Promise<T> {
  const end = performance.now() + ms;
  while (true) {
    const value = await check();
    if (value !== undefined) return value;
    if (performance.now() > end) throw new Error(`timed out after ${ms} ms ${what} ${detail()}`);
    await sleep(25);
  }
}

/**
 * A child process whose stdout is split into lines as it arrives and whose
 * stderr is collected. `stop()` signals it (if still running), awaits its
 * status and both pipes; it is idempotent.
 */
class Proc {
  readonly name: string;
  readonly child: Deno.ChildProcess;
  readonly lines: string[] = [];
  exit: Deno.CommandStatus | null = null;
  /** performance.now() when the exit was seen. */
  exitedAt = 0;
  readonly status: Promise<Deno.CommandStatus>;
  readonly #stdout: Promise<void>;
  readonly #stderr: Promise<string>;
  #stopping: Promise<string> | null = null;

  constructor(name: string, command: string, args: string[], onLine: (line: string) => void = () => {}) {
    this.name = name;
    const child = new Deno.Command(command, { args, stdin: "null", stdout: "piped", stderr: "piped" }).spawn();
    this.child = child;
    this.status = child.status.then((s) => {
      this.exit = s;
      this.exitedAt = performance.now();
      return s;
    });
    this.#stderr = new Response(child.stderr).text();
    this.#stdout = (async () => {
      const decoder = new TextDecoder();
      let pending = "";
      for await (const chunk of child.stdout) {
        pending += decoder.decode(chunk, { stream: true });
        let eol;
        while ((eol = pending.indexOf("\n")) !== -1) {
          const line = pending.slice(0, eol);
          pending = pending.slice(eol + 1);
          this.lines.push(line);
          onLine(line);
        }
      }
      if (pending !== "") this.lines.push(pending);
    })();
  }

  /** Sends `signal` unless the process has exited. */
  signal(signal: Deno.Signal): void {
    if (this.exit !== null) return;
    try {
      this.child.kill(signal);
    } catch {
      // It exited between the check and the kill.
    }
  }

  /** Stops it (`signal`, then SIGKILL if it is still there after `ms`); returns its stderr. */
  stop(signal: Deno.Signal = "SIGKILL", ms = 5_000): Promise<string> {
    this.#stopping ??= (async () => {
      this.signal(signal);
      try {
        await within(this.status, ms, `waiting for ${this.name} to exit`);
      } catch {
        this.signal("SIGKILL");
        await this.status;
      }
      await this.#stdout;
      return await this.#stderr;
    })();
    return this.#stopping;
  }
}

/** A waypost CLI instance behind the balancer; its JSON access log is parsed as it is written. */
class Instance extends Proc {
  readonly records: LogRecord[];
  readonly port: Promise<number>;

  constructor(name: string) {
    const listening = deferred<number>();
    const records: LogRecord[] = [];
    super(name, Deno.execPath(), [
      "run",
      "--allow-net",
      MAIN,
      "--port",
      "0",
      "--proxy-protocol",
      "--trusted-proxies",
      "127.0.0.1",
      "--log-format",
      "json",
      "--drain-delay",
      `${DRAIN_MS}ms`,
      "--grace",
      `${GRACE_MS}ms`,
      "--connect-ports",
      "*",
    ], (line) => {
      const port = /listening on http:\/\/[^ ]*:(\d+)/.exec(line)?.[1];
      if (port !== undefined) listening.resolve(Number(port));
      else if (line.startsWith("{")) {
        try {
          records.push(JSON.parse(line));
        } catch {
          // Not a log record after all: left in `lines` for the failure message.
        }
      }
    });
    this.records = records;
    // An instance that exits before listening resolves with 0 (then start() fails with its stderr).
    this.status.then(() => listening.resolve(0));
    this.port = listening.promise;
  }

  /** The records of requests through the balancer (not HAProxy's health checks) whose target contains `part`. */
  served(part: string): LogRecord[] {
    return this.records.filter((r) => r.kind !== "local" && r.target.includes(part));
  }

  /** How many times this exact request-target was served. */
  count(target: string): number {
    return this.records.filter((r) => r.target === target).length;
  }
}

/** Waits until an instance listens; fails with what it printed if it does not. */
async function listening(instance: Instance): Promise<number> {
  const port = await within(instance.port, START_TIMEOUT_MS, `waiting for ${instance.name} to listen`).catch(() => 0);
  if (port === 0) {
    const stderr = await instance.stop();
    throw new Error(`${instance.name} did not start: ${instance.lines.join("\n")}\n${stderr}`);
  }
  return port;
}

/**
 * deploy/haproxy.cfg with the values of the lines marked `# test: NAME`
 * replaced; fails if a marked line or the value in it is missing, so the
 * template cannot drift away from what this test runs.
 */
function testConfig(template: string, values: Record<string, [RegExp, string]>): string {
  const seen = new Set<string>();
  const out = template.split("\n").map((line) => {
    const marker = /#\s*test:\s*(\S+)\s*$/.exec(line);
    if (marker === null) return line;
    const name = marker[1];
    const rule = values[name];
    assert.ok(rule, `deploy/haproxy.cfg marks a line "test: ${name}" this test does not know`);
    assert.match(line, rule[0], `deploy/haproxy.cfg: the "test: ${name}" line changed: ${line}`);
    seen.add(name);
    return line.replace(rule[0], rule[1]);
  });
  assert.deepEqual([...seen].sort(), Object.keys(values).sort(), "deploy/haproxy.cfg lost a line marked for the test");
  return out.join("\n");
}

/** HAProxy's view of its servers (its stats page as CSV): server name → status (`UP`, `DOWN`, ...) and sessions. */
async function serverStates(statsPort: number): Promise<Map<string, { status: string; check: string; scur: number }>> {
  await using client = await Client.connect(statsPort);
  // HTTP/1.1: HAProxy 2.6 answers chunked even to an HTTP/1.0 request, which util's reader decodes.
  await client.write("GET /stats;csv HTTP/1.1\r\nHost: haproxy-stats\r\nConnection: close\r\n\r\n");
  const res = await client.response();
  assert.equal(res.status, 200, `HAProxy's stats page: ${res.startLine}`);
  const [header, ...rows] = new TextDecoder().decode(res.body).trim().split("\n");
  const columns = header.replace(/^# /, "").split(",");
  const at = (name: string) => columns.indexOf(name);
  const states = new Map<string, { status: string; check: string; scur: number }>();
  for (const row of rows) {
    const cells = row.split(",");
    if (cells[at("pxname")] !== "waypost_instances") continue;
    states.set(cells[at("svname")], {
      status: cells[at("status")],
      check: cells[at("check_status")],
      scur: Number(cells[at("scur")]),
    });
  }
  return states;
}

interface CurlResult {
  status: number;
  body: string;
  /** The local port curl's connection to the balancer used. */
  localPort: number;
  localIp: string;
}

/** One request through the balancer with curl, from CLIENT_ADDRESS. `tunnel`: through CONNECT (curl -p). */
async function curl(front: number, url: string, tunnel = false): Promise<CurlResult> {
  const out = await new Deno.Command(CURL!, {
    args: [
      "-q", // no ~/.curlrc
      "-sS",
      "--max-time",
      String(CURL_MAX_SECONDS),
      "--noproxy",
      "", // proxy variables could exempt 127.0.0.1 from -x; no_proxy "" overrides them
      "--interface",
      CLIENT_ADDRESS,
      "-x",
      `http://127.0.0.1:${front}`,
      ...(tunnel ? ["-p"] : []),
      "-w",
      "\n%{http_code} %{local_ip} %{local_port}",
      url,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    clearEnv: true,
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const eol = stdout.lastIndexOf("\n");
  const [status, localIp, localPort] = stdout.slice(eol + 1).split(" ");
  assert.ok(out.success, `curl ${url} failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`);
  return { status: Number(status), body: stdout.slice(0, eol), localIp, localPort: Number(localPort) };
}

Deno.test({
  name:
    `HAProxy (deploy/haproxy.cfg) in front of two instances: balancing, CONNECT, real client addresses via PROXY v2, ` +
    `a drain that loses nothing${SKIPPED}`,
  ignore: SKIP_REASON !== null,
  async fn(t) {
    // The origin: /slow... answers after SLOW_MS, everything else at once, with the target it got.
    // Pooled upstream connections may sit idle longer than util's default 5 s read bound.
    await using origin = startOrigin(async (c, o) => {
      c.reader.timeoutMs = 60_000;
      await serve(async (req) => {
        if (req.target.startsWith("/slow")) await sleep(SLOW_MS);
        return ok(`target=${req.target}`);
      })(c, o);
      // The client side ended (also a half-closed tunnel): close, so the tunnel ends and is logged.
      c.close();
    });
    const dir = await Deno.makeTempDir({ prefix: "waypost-haproxy-" });
    const procs: Proc[] = [];
    try {
      const a = new Instance("instance A");
      const b = new Instance("instance B");
      procs.push(a, b);
      const [aPort, bPort] = await Promise.all([listening(a), listening(b)]);
      const front = closedPort();
      const stats = closedPort();
      const port = /127\.0\.0\.1:\d+/;
      const config = testConfig(await Deno.readTextFile(TEMPLATE), {
        front: [port, `127.0.0.1:${front}`],
        stats: [port, `127.0.0.1:${stats}`],
        server1: [port, `127.0.0.1:${aPort}`],
        server2: [port, `127.0.0.1:${bPort}`],
        // A check every 200 ms; one failure takes a server out, one success brings it back.
        checks: [/inter \S+ fall \d+ rise \d+/, "inter 200ms fall 1 rise 1"],
      });
      assert.match(config, /send-proxy-v2/);
      assert.match(config, /http-check expect status 200/);
      const cfgPath = `${dir}/haproxy.cfg`;
      await Deno.writeTextFile(cfgPath, config);
      // -db: foreground, so HAProxy is this test's child and is stopped by its PID.
      const haproxy = new Proc("haproxy", HAPROXY!, ["-f", cfgPath, "-db"]);
      procs.push(haproxy);

      // Both instances up: health checks pass (L7OK) through the PROXY header.
      let seen: unknown = null;
      await waitFor(
        async () => {
          if (haproxy.exit !== null) throw new Error(`haproxy exited (${haproxy.exit.code}): ${await haproxy.stop()}`);
          const states = await serverStates(stats).catch((error) => error);
          seen = states instanceof Map ? Object.fromEntries(states) : String(states);
          const up = states instanceof Map &&
            [...states.values()].filter((s) => s.status === "UP" && s.check === "L7OK");
          return up && up.length === 2 ? true : undefined;
        },
        UP_TIMEOUT_MS,
        "waiting for HAProxy to see both instances up",
        () => `(stats: ${JSON.stringify(seen)}; haproxy said: ${haproxy.lines.join("\n")})`,
      );

      await t.step(
        "plain requests pass, are spread over both instances, each logged with the real client",
        async () => {
          const results: CurlResult[] = [];
          for (let i = 0; i < 6; i++) results.push(await curl(front, `${origin.url(`/plain-${i}`)}`));
          for (const [i, r] of results.entries()) {
            assert.equal(r.status, 200);
            assert.equal(r.body, `target=/plain-${i}`);
            assert.equal(r.localIp, CLIENT_ADDRESS);
          }
          const records = await waitFor(
            () => {
              const all = [...a.served("/plain-"), ...b.served("/plain-")];
              return all.length === 6 ? all : undefined;
            },
            LOG_TIMEOUT_MS,
            "waiting for the six plain requests in the instances' logs",
          );
          // Round robin over fresh connections: both instances served some.
          assert.ok(a.served("/plain-").length > 0, "instance A served none of the plain requests");
          assert.ok(b.served("/plain-").length > 0, "instance B served none of the plain requests");
          for (const [i, r] of results.entries()) {
            const record = records.find((x) => x.target === origin.url(`/plain-${i}`));
            assert.ok(record, `no log line for /plain-${i}`);
            // HAProxy dials the instances from 127.0.0.1: only the PROXY header can say 127.0.0.2 and curl's port.
            assert.equal(record.client, CLIENT_ADDRESS);
            assert.equal(record.client_port, r.localPort);
            assert.equal(record.status, 200);
            assert.equal(record.kind, "http");
          }
        },
      );

      await t.step(
        "CONNECT tunnels through the balancer, raw and with curl -p, logged with the real client",
        async () => {
          // Raw: CONNECT, its 200, then a request inside the tunnel and the origin's answer.
          let localPort: number;
          {
            await using client = await Client.connect(front);
            localPort = (client.conn.localAddr as Deno.NetAddr).port;
            await client.write(`CONNECT ${origin.authority} HTTP/1.1\r\nHost: ${origin.authority}\r\n\r\n`);
            const established = await readHead(client.reader, "response");
            assert.equal(established?.status, 200);
            await client.write(`GET /in-tunnel HTTP/1.1\r\nHost: ${origin.authority}\r\nConnection: close\r\n\r\n`);
            const head = await readHead(client.reader, "response");
            assert.ok(head, "no response inside the tunnel");
            const res: Message = await readBody(client.reader, head, "response");
            assert.equal(res.status, 200);
            assert.equal(new TextDecoder().decode(res.body), "target=/in-tunnel");
          }
          // curl from 127.0.0.2 through a tunnel (curl sends the CONNECT, then its GET inside).
          const viaCurl = await curl(front, origin.url("/curl-tunnel"), true);
          assert.equal(viaCurl.status, 200);
          assert.equal(viaCurl.body, "target=/curl-tunnel");
          // Tunnels are logged when they end: one by the raw client (from 127.0.0.1), one by curl.
          const tunnels = await waitFor(
            () => {
              const all = [...a.records, ...b.records].filter((r) => r.kind === "connect");
              return all.length === 2 ? all : undefined;
            },
            LOG_TIMEOUT_MS,
            "waiting for both tunnels in the instances' logs",
          );
          for (const r of tunnels) {
            assert.equal(r.method, "CONNECT");
            assert.equal(r.target, origin.authority);
            assert.equal(r.status, 200);
          }
          const raw = tunnels.find((r) => r.client === "127.0.0.1");
          const fromCurl = tunnels.find((r) => r.client === CLIENT_ADDRESS);
          assert.ok(raw && fromCurl, JSON.stringify(tunnels));
          // The port announced is the client's own, not that of HAProxy's connection to the instance.
          assert.equal(raw.client_port, localPort);
          assert.equal(fromCurl.client_port, viaCurl.localPort);
        },
      );

      await t.step("SIGTERM to one instance: in-flight requests finish, new ones go to the other, exit 0", async () => {
        // Four slow requests on fresh connections: round robin puts two on each instance.
        const slow = [0, 1, 2, 3].map((i) => curl(front, origin.url(`/slow-${i}`)));
        try {
          await waitFor(
            () => origin.requests.filter((r) => r.target.startsWith("/slow-")).length === 4 ? true : undefined,
            LOG_TIMEOUT_MS,
            "waiting for the four slow requests to reach the origin",
          );
          assert.ok((await serverStates(stats)).get("waypost1")!.scur > 0, "instance A has no connection in flight");
          const termAt = performance.now();
          a.signal("SIGTERM");

          // New requests, one after the other, until A is gone: each must succeed. Before each, HAProxy's
          // view of A is noted; once it says DOWN, the request must land on B.
          const after: { i: number; aDown: boolean; result: CurlResult }[] = [];
          let downAt: number | null = null;
          for (let i = 0; a.exit === null || performance.now() - a.exitedAt < 300; i++) {
            assert.ok(performance.now() - termAt < EXIT_TIMEOUT_MS, "instance A did not exit");
            const aDown = (await serverStates(stats)).get("waypost1")!.status.startsWith("DOWN");
            if (aDown) downAt ??= performance.now() - termAt;
            after.push({ i, aDown, result: await curl(front, origin.url(`/after-${i}`)) });
            await sleep(10); // a steady trickle, not a flood
          }
          for (const { i, result } of after) {
            assert.equal(result.status, 200, `/after-${i}`);
            assert.equal(result.body, `target=/after-${i}`);
          }

          // The in-flight requests all finished, with the origin's answer.
          for (const [i, r] of (await Promise.all(slow)).entries()) {
            assert.equal(r.status, 200, `/slow-${i}`);
            assert.equal(r.body, `target=/slow-${i}`);
          }

          const aStatus = await within(a.status, EXIT_TIMEOUT_MS, "waiting for instance A to exit");
          assert.equal(aStatus.code, 0, `instance A exited with ${aStatus.code}`);
          const aLifetime = a.exitedAt - termAt;
          // It kept serving for the drain delay, then waited for its slow exchanges only: the grace (which
          // starts when the listener closes) did not run out.
          assert.ok(aLifetime >= DRAIN_MS, `instance A exited ${aLifetime} ms after SIGTERM`);
          assert.ok(aLifetime < DRAIN_MS + GRACE_MS, `instance A exited ${aLifetime} ms after SIGTERM`);
          const aErr = await a.stop();
          assert.doesNotMatch(aErr, /grace-expired/);

          // A said 503 on /healthz while draining, and HAProxy took it out before its listener closed.
          assert.ok(a.records.some((r) => r.kind === "local" && r.target === "/healthz" && r.status === 503));
          assert.ok(downAt !== null && downAt < DRAIN_MS, `HAProxy saw A down ${downAt} ms after SIGTERM`);
          // A finished its slow exchanges (started before SIGTERM, ended after its listener closed).
          const aSlow = a.served("/slow-");
          assert.ok(aSlow.length > 0, "instance A had no slow request in flight");
          for (const r of aSlow) assert.equal(r.status, 200);
          assert.equal(aSlow.length + b.served("/slow-").length, 4);
          // Every request sent once HAProxy knew A was down went to B.
          const sentToB = after.filter((x) => x.aDown);
          assert.ok(sentToB.length > 0, "no request was sent after HAProxy marked A down");
          await waitFor(
            () => sentToB.every((x) => b.count(origin.url(`/after-${x.i}`)) === 1) || undefined,
            LOG_TIMEOUT_MS,
            "waiting for B to log the requests sent after A was marked down",
          );
          for (const x of sentToB) assert.equal(a.count(origin.url(`/after-${x.i}`)), 0, `/after-${x.i} reached A`);
          console.log(
            `drain: ${after.length} requests after SIGTERM (${sentToB.length} after HAProxy marked A down at ` +
              `${Math.round(downAt)} ms), A exited 0 after ${Math.round(aLifetime)} ms`,
          );
        } finally {
          // Nothing left running on a failure above: the slow curls end by --max-time at the latest.
          await Promise.allSettled(slow);
        }
      });

      // B serves alone now.
      const last = await curl(front, origin.url("/last"));
      assert.equal(last.status, 200);
      await waitFor(
        () => b.count(origin.url("/last")) === 1 || undefined,
        LOG_TIMEOUT_MS,
        "waiting for B to log /last",
      );
    } finally {
      // HAProxy first (its connections to the instances close), then the instances, by PID.
      for (const p of procs.reverse()) await p.stop(p instanceof Instance ? "SIGKILL" : "SIGTERM");
      await Deno.remove(dir, { recursive: true });
    }
  },
});
