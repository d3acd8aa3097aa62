/**
 * A real parent proxy: Debian's Squid, run in the foreground (`squid -N`) as a
 * child process with its own config, pid file and logs in a temporary
 * directory (no disk cache, no DNS server but 127.0.0.1, IP-literal URLs only),
 * in front of a loopback origin, with a waypost started in-process using it as
 * `upstreamProxy`.
 *
 * It proves that plain requests pass waypost → Squid → origin with both Via
 * entries and show up in Squid's access.log (with the user name when Squid
 * asks for credentials); that CONNECT tunnels pass through Squid's CONNECT;
 * that Squid's own answers (its 407 to wrong credentials, its 503 when the
 * origin is down, its 403 to a CONNECT its policy denies) reach the client
 * with their status and Squid's page, plus waypost's `received-status` member.
 *
 * Skipped (not failed) where squid is not installed (`.ci/run` installs it
 * from apt); the Basic-auth variant also where `basic_ncsa_auth` or a tool to
 * hash the password (openssl, or python3's crypt module) is missing. Every wait
 * is bounded and Squid is stopped by PID (SIGTERM, then SIGKILL) in `finally`.
 */
import assert from "node:assert/strict";
import {
  closedPort,
  concat,
  echoTarget,
  fieldValues,
  get,
  latin1,
  type Message,
  ok,
  pseudoRandomBytes,
  serve,
  startOrigin,
  startTestProxy,
  text,
} from "./util.ts";

/** Bounds on every wait. */
const LISTEN_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const LOG_TIMEOUT_MS = 3_000;
const HASH_TIMEOUT_MS = 5_000;
/** Squid's `visible_hostname`: the name in its Via entry, X-Cache and error pages. */
const SQUID_NAME = "squid-under-test";
const USER = "alice";
const PASSWORD = "s3cret pw";
const NCSA_AUTH = "/usr/lib/squid/basic_ncsa_auth";

/** The absolute path of `name` on PATH, or null. */
function which(name: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir === "") continue;
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch {
      // Not in this directory: try the next one.
    }
  }
  return null;
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    // Not there.
    return false;
  }
}

/** Squid: on PATH, or in an sbin directory (Debian installs it in /usr/sbin, off a non-root user's PATH). */
function findSquid(): string | null {
  return which("squid") ?? ["/usr/sbin/squid", "/usr/local/sbin/squid"].find(isFile) ?? null;
}

const SQUID = findSquid();
const OPENSSL = which("openssl");
const PYTHON = which("python3");
const SKIP_REASON = SQUID === null ? "squid is not installed; CI installs it from apt" : null;
const AUTH_SKIP_REASON = SKIP_REASON ??
  (!isFile(NCSA_AUTH)
    ? `${NCSA_AUTH} is missing`
    : OPENSSL === null && PYTHON === null
    ? "neither openssl nor python3 is installed to hash the password"
    : null);
const skipped = (reason: string | null) => reason === null ? "" : ` (skipped: ${reason})`;

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

/** Runs a short command and returns its stdout, killing it (by PID) if it runs too long. */
async function run(command: string, args: string[]): Promise<{ code: number; stdout: string }> {
  const child = new Deno.Command(command, { args, stdin: "null", stdout: "piped", stderr: "null" }).spawn();
  const stdout = new Response(child.stdout).text();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
  }, HASH_TIMEOUT_MS);
  try {
    const status = await child.status;
    return { code: status.code, stdout: await stdout };
  } finally {
    clearTimeout(timer);
  }
}

/** An htpasswd line basic_ncsa_auth accepts: APR1-MD5 from openssl, else MD5-crypt from python3; null if neither works. */
async function htpasswdLine(user: string, password: string): Promise<string | null> {
  const attempts: Array<[string | null, string[]]> = [
    [OPENSSL, ["passwd", "-apr1", password]],
    [PYTHON, [
      "-W",
      "ignore",
      "-c",
      "import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_MD5)))",
      password,
    ]],
  ];
  for (const [command, args] of attempts) {
    if (command === null) continue;
    const { code, stdout } = await run(command, args);
    const hash = stdout.trim();
    if (code === 0 && /^\$(apr1|1)\$/.test(hash)) return `${user}:${hash}\n`;
  }
  return null;
}

/** What a Squid instance is configured with. */
interface SquidOptions {
  /** The origin port CONNECT may reach (Squid's `SSL_ports` rule denies the rest). */
  connectPort: number;
  /** Require Basic credentials checked by basic_ncsa_auth against this htpasswd content. */
  htpasswd?: string;
}

/**
 * Squid's config: `http_port` on 127.0.0.1, everything it writes in `dir`, no
 * cache, no DNS server but 127.0.0.1; Basic auth against `passwd` when given.
 */
function squidConfig(dir: string, port: number, connectPort: number, passwd: string | null): string {
  const lines = [
    `http_port 127.0.0.1:${port}`,
    `visible_hostname ${SQUID_NAME}`,
    `pid_filename ${dir}/squid.pid`,
    // stdio (not the log daemon) with buffered_logs off: each line is written as the transaction ends.
    // Squid's native format, with the client's port after its address (to see connection reuse).
    "logformat waypost_test %ts.%03tu %6tr %>a:%>p %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt",
    `access_log stdio:${dir}/access.log waypost_test`,
    `cache_log ${dir}/cache.log`,
    "cache_store_log none",
    `coredump_dir ${dir}`,
    "buffered_logs off",
    "strip_query_terms off",
    // No cache at all: no cache_dir, nothing stored in memory.
    "cache deny all",
    "cache_mem 0 MB",
    "digest_generation off",
    // Never a name to resolve here (IP-literal URLs only), and if one were, only 127.0.0.1 is asked.
    "dns_nameservers 127.0.0.1",
    "pinger_enable off",
    "netdb_filename none",
    "shutdown_lifetime 0 seconds",
    // Only used when started as root (Squid refuses to work as root); ignored otherwise.
    "cache_effective_user nobody",
    "acl CONNECT method CONNECT",
    "acl SSL_ports port 443",
    `acl test_origin port ${connectPort}`,
  ];
  if (passwd !== null) {
    lines.push(
      `auth_param basic program ${NCSA_AUTH} ${passwd}`,
      "auth_param basic children 2 startup=1 idle=1",
      "auth_param basic realm squid-test",
      "acl users proxy_auth REQUIRED",
      "http_access deny !users",
    );
  }
  lines.push(
    // Squid's stock policy denies CONNECT except to 443: the test origin is let through explicitly.
    "http_access allow CONNECT localhost test_origin",
    "http_access deny CONNECT !SSL_ports",
    "http_access allow localhost",
    "http_access deny all",
  );
  return lines.join("\n") + "\n";
}

/**
 * Squid in the foreground (`-N`) on 127.0.0.1 and a free port. `stop()`
 * sends SIGTERM to its PID, then SIGKILL after a bound, and removes its
 * directory; it is idempotent.
 */
class Squid implements AsyncDisposable {
  readonly dir: string;
  readonly port: number;
  readonly child: Deno.ChildProcess;
  exit: Deno.CommandStatus | null = null;
  readonly status: Promise<Deno.CommandStatus>;
  /** What Squid wrote to stderr (a config error before cache.log is open), read until it exits. */
  readonly stderr: Promise<string>;
  #stopping: Promise<void> | null = null;

  private constructor(dir: string, port: number, child: Deno.ChildProcess) {
    this.dir = dir;
    this.port = port;
    this.child = child;
    this.status = child.status.then((s) => this.exit = s);
    this.stderr = new Response(child.stderr).text();
  }

  /** Writes the config, starts Squid and waits (bounded) until it accepts connections. */
  static async start(options: SquidOptions): Promise<Squid> {
    const dir = await Deno.makeTempDir({ prefix: "waypost-squid-" });
    const port = closedPort();
    let child: Deno.ChildProcess;
    try {
      // Started as root, Squid works as cache_effective_user (nobody): that user must write here.
      await Deno.chmod(dir, 0o777);
      let passwd: string | null = null;
      if (options.htpasswd !== undefined) {
        passwd = `${dir}/passwd`;
        await Deno.writeTextFile(passwd, options.htpasswd);
        await Deno.chmod(passwd, 0o644); // read by the helper, which runs as nobody under root
      }
      await Deno.writeTextFile(`${dir}/squid.conf`, squidConfig(dir, port, options.connectPort, passwd));
      child = new Deno.Command(SQUID!, {
        // -n: our own service name, so the shared-memory segments cannot collide with another Squid on the
        // machine (a system squid started by the package install, or a benchmark's).
        args: [
          "-N",
          "-n",
          `waypost${(crypto.getRandomValues(new Uint32Array(1))[0] >>> 0).toString(36)}`,
          "-f",
          `${dir}/squid.conf`,
        ],
        cwd: dir,
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
    } catch (error) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw error;
    }
    const squid = new Squid(dir, port, child);
    try {
      await squid.#waitListening();
    } catch (error) {
      await squid.stop();
      throw error;
    }
    return squid;
  }

  /** Polls a connect to the port every 50 ms, up to LISTEN_TIMEOUT_MS; fails at once if Squid exits. */
  async #waitListening(): Promise<void> {
    const end = performance.now() + LISTEN_TIMEOUT_MS;
    while (true) {
      if (this.exit !== null) {
        const why = `${await this.stderr}\n${await this.cacheLog()}`;
        throw new Error(`squid exited with ${this.exit.code} before listening:\n${why}`);
      }
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port: this.port })).close();
        return;
      } catch {
        // Not listening yet.
      }
      if (performance.now() > end) {
        throw new Error(`squid not listening after ${LISTEN_TIMEOUT_MS} ms:\n${await this.cacheLog()}`);
      }
      await sleep(50);
    }
  }

  /** The tail of cache.log (for failure messages). */
  async cacheLog(): Promise<string> {
    try {
      return (await Deno.readTextFile(`${this.dir}/cache.log`)).split("\n").slice(-30).join("\n");
    } catch (error) {
      return `(no cache.log: ${error})`;
    }
  }

  async accessLog(): Promise<string[]> {
    try {
      return (await Deno.readTextFile(`${this.dir}/access.log`)).split("\n").filter((l) => l !== "");
    } catch {
      // Not created yet.
      return [];
    }
  }

  /** Waits (bounded) for an access.log line matching `pattern`. */
  async logLine(pattern: RegExp): Promise<string> {
    const end = performance.now() + LOG_TIMEOUT_MS;
    while (true) {
      const lines = await this.accessLog();
      const line = lines.find((l) => pattern.test(l));
      if (line !== undefined) return line;
      if (performance.now() > end) {
        throw new Error(`no access.log line matching ${pattern} after ${LOG_TIMEOUT_MS} ms:\n${lines.join("\n")}`);
      }
      await sleep(25);
    }
  }

  #signal(signal: Deno.Signal): void {
    if (this.exit !== null) return;
    try {
      this.child.kill(signal); // the child's own PID
    } catch {
      // It exited between the check and the kill.
    }
  }

  /** SIGTERM, SIGKILL if still running after STOP_TIMEOUT_MS, then removes the directory. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#signal("SIGTERM");
      try {
        await within(this.status, STOP_TIMEOUT_MS, "waiting for squid to exit after SIGTERM");
      } catch {
        this.#signal("SIGKILL");
        await this.status;
      }
      await this.stderr;
      await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    })();
    return this.#stopping;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/** Every value of a list field, as one comma-separated string. */
function joined(m: Message, name: string): string {
  return fieldValues(m.fields, name).join(", ");
}

function connectRequest(port: number): string {
  return `CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`;
}

/** `s` as a literal inside a RegExp. */
function re(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/** A body covering every byte value, large enough to take many reads on every hop. */
const BIG = pseudoRandomBytes(1 << 20);

/** echoTarget, plus `/big` (BIG) and POST (the body echoed, with how the origin saw it framed). */
const originScript = serve((req) => {
  if (req.method === "POST") {
    const framing = `cl=${fieldValues(req.fields, "content-length").join()} te=${
      fieldValues(req.fields, "transfer-encoding").join()
    }`;
    return ok(req.body, [`X-Framing: ${framing}`]);
  }
  return req.target === "/big" ? ok(BIG) : ok(`target=${req.target}`);
});

const SQUID_VIA = new RegExp(`^1\\.1 ${SQUID_NAME} \\(squid/[0-9.]+\\)$`);

Deno.test({
  name: `squid as the parent proxy: requests, CONNECT, and squid's error pages relayed${skipped(SKIP_REASON)}`,
  ignore: SKIP_REASON !== null,
  async fn() {
    await using origin = startOrigin(originScript);
    await using squid = await Squid.start({ connectPort: origin.port });
    await using proxy = startTestProxy({ upstreamProxy: `http://127.0.0.1:${squid.port}`, connectPorts: "*" });

    // a. A plain GET: waypost → squid → origin, both Via entries on each side.
    await using client = await proxy.connect();
    for (const path of ["/a", "/b?q=1"]) {
      await client.write(get(origin.url(path)));
      const res = await client.response();
      assert.equal(res.status, 200, res.headRaw);
      assert.equal(text(res.body), `target=${path}`);
      const via = fieldValues(res.fields, "via").flatMap((v) => v.split(",")).map((v) => v.trim());
      assert.equal(via.length, 2, `client-side Via: ${JSON.stringify(via)}`);
      assert.match(via[0], SQUID_VIA);
      assert.match(via[1], /^1\.1 waypost$/);
      assert.match(joined(res, "x-cache"), new RegExp(`^MISS from ${SQUID_NAME}`));
    }
    const seen = origin.requests.at(-1)!;
    assert.equal(seen.target, "/b?q=1", "squid sends origin-form to the origin");
    const originVia = fieldValues(seen.fields, "via").flatMap((v) => v.split(",")).map((v) => v.trim());
    assert.equal(originVia.length, 2, `origin-side Via: ${JSON.stringify(originVia)}`);
    assert.match(originVia[0], /^1\.1 waypost \([0-9a-f]{8}\)$/);
    assert.match(originVia[1], SQUID_VIA);
    assert.equal(fieldValues(seen.fields, "proxy-authorization").length, 0);

    // a'. Bodies both ways, intact: 1 MiB from the origin; a chunked request body (squid may re-frame it).
    await client.write(get(origin.url("/big")));
    const big = await client.response();
    assert.equal(big.status, 200);
    assert.deepEqual(big.body, BIG, "the 1 MiB body changed on the way");
    const posted = concat([BIG.subarray(0, 70_000), latin1("\r\n0\r\n")]);
    await client.write(`POST ${origin.url("/post")} HTTP/1.1\r\nHost: ${origin.authority}\r\n`);
    await client.write(`Transfer-Encoding: chunked\r\n\r\n${posted.length.toString(16)}\r\n`);
    await client.write(concat([posted, latin1("\r\n0\r\n\r\n")]));
    const echoed = await client.response();
    assert.equal(echoed.status, 200, echoed.headRaw);
    assert.deepEqual(echoed.body, posted, "the request body changed on the way");
    assert.match(joined(echoed, "x-framing"), /^cl=\d* te=(chunked)?$/);

    // Squid logged each request, all on one connection from waypost (waypost's pool reused it).
    const logged = await Promise.all(
      ["/a", "/b?q=1", "/big"].map((path) =>
        squid.logLine(new RegExp(` TCP_MISS/200 \\d+ GET ${re(origin.url(path))} - HIER_DIRECT/127\\.0\\.0\\.1 `))
      ),
    );
    logged.push(await squid.logLine(new RegExp(` TCP_MISS/200 \\d+ POST ${re(origin.url("/post"))} - `)));
    const clientPorts = new Set(logged.map((line) => line.split(/\s+/)[2]));
    assert.equal(clientPorts.size, 1, `waypost used several connections to squid:\n${logged.join("\n")}`);

    // b. CONNECT through squid's CONNECT; an HTTP exchange inside the tunnel.
    {
      await using tunnel = await proxy.connect();
      await tunnel.write(connectRequest(origin.port));
      const established = await tunnel.reader.readUntil("\r\n\r\n");
      assert.match(text(established!), /^HTTP\/1\.1 200 /);
      await tunnel.write(`GET /inside HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\n\r\n`);
      const inside = await tunnel.response();
      assert.equal(inside.status, 200);
      assert.equal(text(inside.body), "target=/inside");
      assert.equal(fieldValues(inside.fields, "via").length, 0, "nothing rewrites a tunnel");
      const raw = origin.requests.at(-1)!;
      assert.equal(raw.startLine, "GET /inside HTTP/1.1");
      assert.equal(fieldValues(raw.fields, "via").length, 0);
    }
    await squid.logLine(new RegExp(` TCP_TUNNEL/200 \\d+ CONNECT 127\\.0\\.0\\.1:${origin.port} - `));

    // d. Squid's own answer when the origin is down: its status and page, relayed.
    const down = closedPort();
    const failed = await proxy.roundTrip(get(`http://127.0.0.1:${down}/gone`));
    assert.ok(failed.status === 503 || failed.status === 502, failed.headRaw);
    assert.match(joined(failed, "x-squid-error"), /^ERR_CONNECT_FAIL/);
    assert.match(joined(failed, "server"), /^squid/);
    assert.match(text(failed.body), /ERROR: The requested URL could not be retrieved/);
    assert.match(text(failed.body), new RegExp(`http://127\\.0\\.0\\.1:${down}/gone`));
    assert.match(joined(failed, "proxy-status"), new RegExp(`waypost; received-status=${failed.status}`));
    await squid.logLine(new RegExp(` TCP_MISS/${failed.status} \\d+ GET http://127\\.0\\.0\\.1:${down}/gone `));

    // d'. A CONNECT Squid's policy denies (not the test origin's port, not 443): its 403 relayed.
    const denied = await proxy.roundTrip(connectRequest(down), "CONNECT");
    assert.equal(denied.status, 403, denied.headRaw);
    assert.match(joined(denied, "x-squid-error"), /^ERR_ACCESS_DENIED/);
    assert.match(text(denied.body), /Access Denied/);
    assert.match(joined(denied, "proxy-status"), /waypost; received-status=403/);
    await squid.logLine(new RegExp(` TCP_DENIED/403 \\d+ CONNECT 127\\.0\\.0\\.1:${down} `));
  },
});

Deno.test({
  name: `squid as a parent that asks for Basic credentials: ours pass, wrong ones get squid's 407${
    skipped(AUTH_SKIP_REASON)
  }`,
  ignore: AUTH_SKIP_REASON !== null,
  async fn(t) {
    const htpasswd = await htpasswdLine(USER, PASSWORD);
    if (htpasswd === null) {
      // Found at load time but unusable (python3 without crypt, say): nothing to check with.
      await t.step({ name: "skipped: could not hash the password (openssl, python3 crypt)", ignore: true, fn() {} });
      return;
    }
    await using origin = startOrigin(echoTarget);
    await using squid = await Squid.start({ connectPort: origin.port, htpasswd });
    const credentials = `${USER}:${encodeURIComponent(PASSWORD)}`;
    await using proxy = startTestProxy({
      upstreamProxy: `http://${credentials}@127.0.0.1:${squid.port}`,
      connectPorts: "*",
    });

    // a. With our credentials: 200, and squid logs the user.
    const res = await proxy.roundTrip(get(origin.url("/authed")));
    assert.equal(res.status, 200, res.headRaw);
    assert.equal(text(res.body), "target=/authed");
    const originVia = fieldValues(origin.requests.at(-1)!.fields, "via").join(", ");
    assert.match(originVia, new RegExp(`^1\\.1 waypost \\([0-9a-f]{8}\\), 1\\.1 ${SQUID_NAME} \\(squid/`));
    assert.equal(fieldValues(origin.requests.at(-1)!.fields, "proxy-authorization").length, 0);
    await squid.logLine(new RegExp(` TCP_MISS/200 \\d+ GET ${re(origin.url("/authed"))} ${USER} HIER_DIRECT/`));

    // b. CONNECT with our credentials.
    {
      await using tunnel = await proxy.connect();
      await tunnel.write(connectRequest(origin.port));
      assert.match(text((await tunnel.reader.readUntil("\r\n\r\n"))!), /^HTTP\/1\.1 200 /);
      await tunnel.write(`GET /tunnel HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\n\r\n`);
      const inside = await tunnel.response();
      assert.equal(inside.status, 200);
      assert.equal(text(inside.body), "target=/tunnel");
    }
    await squid.logLine(new RegExp(` TCP_TUNNEL/200 \\d+ CONNECT 127\\.0\\.0\\.1:${origin.port} ${USER} `));

    // c. Wrong credentials, and none: squid's 407 relayed, with waypost's received-status member.
    const before = origin.requests.length;
    for (const upstreamProxy of [`http://${USER}:wrong@127.0.0.1:${squid.port}`, `http://127.0.0.1:${squid.port}`]) {
      await using refused = startTestProxy({ upstreamProxy, connectPorts: "*" });
      const denied = await refused.roundTrip(get(origin.url("/denied")));
      assert.equal(denied.status, 407, denied.headRaw);
      assert.match(joined(denied, "proxy-authenticate"), /^Basic realm="squid-test"/);
      assert.match(joined(denied, "x-squid-error"), /^ERR_CACHE_ACCESS_DENIED/);
      assert.match(text(denied.body), /Cache Access Denied/);
      assert.match(joined(denied, "proxy-status"), /waypost; received-status=407/);
      const tunnel = await refused.roundTrip(connectRequest(origin.port), "CONNECT");
      assert.equal(tunnel.status, 407, "a refused CONNECT is relayed too");
      assert.match(text(tunnel.body), /Cache Access Denied/);
      assert.match(joined(tunnel, "proxy-status"), /waypost; received-status=407/);
    }
    assert.equal(origin.requests.length, before, "nothing reached the origin without valid credentials");
    await squid.logLine(new RegExp(` TCP_DENIED/407 \\d+ GET ${re(origin.url("/denied"))} ${USER} `));

    // d. Squid's error page for an origin that is down, behind authentication.
    const down = closedPort();
    const failed = await proxy.roundTrip(get(`http://127.0.0.1:${down}/`));
    assert.ok(failed.status === 503 || failed.status === 502, failed.headRaw);
    assert.match(joined(failed, "x-squid-error"), /^ERR_CONNECT_FAIL/);
    assert.match(joined(failed, "proxy-status"), new RegExp(`waypost; received-status=${failed.status}`));
  },
});
