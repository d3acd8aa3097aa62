/**
 * The command-line interface: flags → options → {@link startProxy}; signals
 * and exit codes. Exit 0 after a graceful stop, 2 for bad flags, 1 when the
 * proxy cannot start.
 *
 * @module
 */
import { parseArgs } from "node:util";
import denoJson from "./deno.json" with { type: "json" };
import { consoleLogger, LOG_LEVELS, type LogLevel } from "./lib/log.ts";
import { DEFAULTS, MAX_TIMEOUT_MS, parseDuration, type ProxyOptions } from "./lib/options.ts";
import { hooksSpecifier, loadHooks } from "./lib/hooks_loader.ts";
import { type AccessLogConfig, accessLogFor, LOG_FORMATS, type LogFormat, reopenAccessLog } from "./lib/access_log.ts";
import type { ProxyHooks } from "./lib/hooks.ts";
import { startProxy } from "./lib/server.ts";

/** Shutdown grace period when --grace is not given. */
const DEFAULT_GRACE_MS = 10_000;

/** Formats a duration in ms the way the flags accept it (`10s`, `2m`, `500ms`). */
function ms(value: number): string {
  if (value % 60_000 === 0 && value > 0) return `${value / 60_000}m`;
  if (value % 1000 === 0) return `${value / 1000}s`;
  return `${value}ms`;
}

const USAGE = `Usage: waypost [options]

A forward HTTP/1.1 proxy. Point clients at it with http_proxy=http://HOST:PORT.

Options:
  --host HOST                 address to listen on (default ${DEFAULTS.hostname})
  --port PORT                 port to listen on, 0 picks a free one (default ${DEFAULTS.port})
  --via NAME                  pseudonym in the Via field, used for loop detection (default ${DEFAULTS.via})
  --connect-timeout DURATION  upstream connect timeout, then 504 (default ${ms(DEFAULTS.connectTimeoutMs)})
  --response-timeout DURATION wait for the origin's response head, then 504 (default ${ms(DEFAULTS.responseTimeoutMs)})
  --header-timeout DURATION   time to receive a request head (default ${ms(DEFAULTS.headerTimeoutMs)})
  --idle-timeout DURATION     keep-alive idle time between requests (default ${ms(DEFAULTS.idleTimeoutMs)})
  --body-timeout DURATION     abort an exchange whose body stalls this long (default ${ms(DEFAULTS.bodyTimeoutMs)})
  --max-connections N         client connections at most, more get 503 (default ${DEFAULTS.maxConnections})
  --max-connections-per-client N  per client address (default ${DEFAULTS.maxConnectionsPerClient})
  --grace DURATION            shutdown grace period for in-flight exchanges (default ${ms(DEFAULT_GRACE_MS)})
  --connect-ports LIST        ports CONNECT may reach: 443,8443 or '*' for all (default ${DEFAULTS.connectPorts})
  --tunnel-idle-timeout DURATION  close tunnels idle this long, 0 = never (default ${DEFAULTS.tunnelIdleTimeoutMs})
  --hooks FILE_OR_URL         a module whose default export is hooks (see README "Programming it");
                              a local file needs --allow-read, a URL --allow-import
  --hook-timeout DURATION     an asynchronous hook not settled by then fails with 500, 0 = no limit
                              (default ${ms(DEFAULTS.hookTimeoutMs)})
  --proxy-status-details      Proxy-Status on error answers also names the stable error code
  --log-format FORMAT         access log: json, squid, common, text or none (default: text on a
                              terminal, json otherwise)
  --log-file PATH             append the access log to PATH (needs --allow-write=PATH; reopened on
                              SIGHUP for log rotation); default: standard output
  --log-query                 keep query strings in the access log (default: stripped)
  --log-level LEVEL           diagnostics on stderr: debug, info, warn, error or silent (default info)
  --workers N|auto            event loops (threads) sharing the port (default 1); needs
                              --unstable-net and --allow-read (see README)
  -h, --help                  print this help and exit
  -V, --version               print the version and exit

Durations: 500ms, 10s, 2m, 1h (a bare number means seconds).`;

function fail(message: string): never {
  console.error(`waypost: ${message}`);
  console.error(USAGE);
  Deno.exit(2);
}

function duration(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const ms = parseDuration(text);
  if (Number.isNaN(ms)) fail(`invalid duration for --${flag}: ${JSON.stringify(text)}`);
  // Longer timers would fire at once (the runtime's timers hold 2^31 - 1 ms).
  if (ms > MAX_TIMEOUT_MS) fail(`--${flag} ${text} is too long: at most ${Math.floor(MAX_TIMEOUT_MS / 3_600_000)}h`);
  return ms;
}

function count(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^[0-9]{1,9}$/.test(text) || Number(text) < 1) fail(`invalid number for --${flag}: ${JSON.stringify(text)}`);
  return Number(text);
}

async function main(args: string[]): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        host: { type: "string" },
        port: { type: "string" },
        via: { type: "string" },
        "connect-timeout": { type: "string" },
        "response-timeout": { type: "string" },
        "header-timeout": { type: "string" },
        "idle-timeout": { type: "string" },
        grace: { type: "string" },
        "body-timeout": { type: "string" },
        "max-connections": { type: "string" },
        "max-connections-per-client": { type: "string" },
        "connect-ports": { type: "string" },
        "tunnel-idle-timeout": { type: "string" },
        hooks: { type: "string" },
        "hook-timeout": { type: "string" },
        "proxy-status-details": { type: "boolean" },
        "log-format": { type: "string" },
        "log-file": { type: "string" },
        "log-query": { type: "boolean" },
        "log-level": { type: "string" },
        workers: { type: "string" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    }));
  } catch (error) {
    fail(error instanceof Error ? error.message : String(error));
  }
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (values.version) {
    console.log(`waypost ${denoJson.version}`);
    return;
  }
  let port: number | undefined;
  if (values.port !== undefined) {
    if (!/^[0-9]{1,5}$/.test(values.port) || Number(values.port) > 65535) {
      fail(`invalid port: ${JSON.stringify(values.port)}`);
    }
    port = Number(values.port);
  }
  const level = (values["log-level"] ?? "info") as LogLevel;
  if (!LOG_LEVELS.includes(level)) fail(`invalid log level: ${JSON.stringify(values["log-level"])}`);
  const graceMs = duration("grace", values.grace) ?? DEFAULT_GRACE_MS;
  let connectPorts: number[] | "*" | undefined;
  const portsText = values["connect-ports"];
  if (portsText !== undefined) {
    if (portsText.trim() === "*") connectPorts = "*";
    else {
      connectPorts = portsText.split(",").map((p) => p.trim()).map((p) => {
        if (!/^[0-9]{1,5}$/.test(p) || Number(p) < 1 || Number(p) > 65535) {
          fail(`invalid port in --connect-ports: ${JSON.stringify(p)}`);
        }
        return Number(p);
      });
    }
  }
  const options: ProxyOptions = {
    hostname: values.host,
    port,
    via: values.via,
    connectTimeoutMs: duration("connect-timeout", values["connect-timeout"]),
    responseTimeoutMs: duration("response-timeout", values["response-timeout"]),
    headerTimeoutMs: duration("header-timeout", values["header-timeout"]),
    idleTimeoutMs: duration("idle-timeout", values["idle-timeout"]),
    connectPorts,
    bodyTimeoutMs: duration("body-timeout", values["body-timeout"]),
    maxConnections: count("max-connections", values["max-connections"]),
    maxConnectionsPerClient: count("max-connections-per-client", values["max-connections-per-client"]),
    tunnelIdleTimeoutMs: duration("tunnel-idle-timeout", values["tunnel-idle-timeout"]),
    hookTimeoutMs: duration("hook-timeout", values["hook-timeout"]),
    proxyStatusDetails: values["proxy-status-details"],
    logger: consoleLogger(level),
  };
  const formatText = values["log-format"] ??
    (Deno.stdout.isTerminal() && values["log-file"] === undefined ? "text" : "json");
  if (formatText !== "none" && !(LOG_FORMATS as readonly string[]).includes(formatText)) {
    fail(`invalid --log-format: ${JSON.stringify(formatText)} (json, squid, common, text or none)`);
  }
  const logConfig: AccessLogConfig | null = formatText === "none"
    ? null
    : { format: formatText as LogFormat, file: values["log-file"] ?? null, query: values["log-query"] ?? false };
  let access: ReturnType<typeof accessLogFor> | null = null;
  if (logConfig !== null) {
    try {
      access = accessLogFor(logConfig);
    } catch (error) {
      const hint = error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied
        ? ` (run with --allow-write=${logConfig.file})`
        : "";
      console.error(
        `waypost: cannot open --log-file ${logConfig.file}: ${error instanceof Error ? error.message : error}${hint}`,
      );
      Deno.exit(1);
    }
  }
  const builtIn: ProxyHooks[] = access === null ? [] : [access.log.hooks];
  options.hooks = builtIn.length > 0 ? builtIn : undefined;
  const hooksModule = values.hooks === undefined ? undefined : hooksSpecifier(values.hooks, Deno.cwd());
  if (hooksModule !== undefined) {
    try {
      const user = await loadHooks(hooksModule);
      options.hooks = [...builtIn, ...(Array.isArray(user) ? user : [user])];
    } catch (error) {
      const why = error instanceof Error ? error.message : String(error);
      const hint = error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied
        ? ` (run with ${/^https?:/i.test(hooksModule) ? "--allow-import" : "--allow-read"} for it)`
        : "";
      console.error(`waypost: cannot load --hooks ${values.hooks}: ${why}${hint}`);
      Deno.exit(1);
    }
  }

  const workers = workerCount(values.workers);
  // SO_REUSEPORT is behind --unstable-net; without it Deno would exit on the listen call.
  if (workers > 1 && typeof (Deno as unknown as Record<string, unknown>).listenDatagram !== "function") {
    fail(
      "--workers needs --unstable-net (SO_REUSEPORT) and read access to lib/worker.ts, e.g.\n" +
        "  deno run --allow-net --allow-read --unstable-net main.ts --workers auto",
    );
  }

  const where = `${options.hostname ?? DEFAULTS.hostname}:${options.port ?? DEFAULTS.port}`;
  let proxy;
  try {
    // SO_REUSEPORT would let a second instance share the port with a stale one without a word:
    // the port must be free before the workers bind it together.
    if (workers > 1 && (options.port ?? DEFAULTS.port) !== 0) {
      Deno.listen({ hostname: options.hostname ?? DEFAULTS.hostname, port: options.port ?? DEFAULTS.port }).close();
    }
    proxy = startProxy({ ...options, reusePort: workers > 1 });
  } catch (error) {
    // Option validation (resolveOptions) reports a bad value as a TypeError: a usage error.
    if (error instanceof TypeError) fail(error.message);
    const why = error instanceof Deno.errors.AddrInUse
      ? "the address is in use (another waypost or another program listens there)"
      : error instanceof Error
      ? error.message
      : String(error);
    console.error(`waypost: cannot listen on ${where}: ${why}`);
    Deno.exit(1);
  }
  const { hostname, port: bound } = proxy.addr;
  const threads = await startWorkers(
    workers - 1,
    { ...options, logger: undefined, hooks: undefined, port: bound },
    level,
    hooksModule,
    logConfig,
  );
  const shown = hostname.includes(":") ? `[${hostname}]` : hostname;

  let signals = 0;
  const onSignal = () => {
    if (++signals > 1) Deno.exit(0); // a second signal exits at once
    Promise.all([proxy.shutdown(graceMs), ...threads.map((w) => stopWorker(w, graceMs))])
      .then(() => access?.log.flush(1000))
      .catch((error) => console.error(`waypost: shutdown: ${error instanceof Error ? error.message : error}`))
      .finally(() => Deno.exit(0));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  // SIGHUP: the log file is reopened (log rotation); there is no configuration file to reload yet.
  Deno.addSignalListener("SIGHUP", () => {
    for (const worker of threads) worker.postMessage({ type: "reopen-log" });
    if (access === null || logConfig?.file == null) {
      console.error("waypost: SIGHUP ignored: there is no configuration file to reload");
      return;
    }
    const problem = reopenAccessLog(access, logConfig);
    if (problem !== null) console.error(`waypost: ${problem}`);
  });
  // The listening line comes last: whoever waits for it may signal at once, and the handlers are in place.
  console.log(`waypost listening on http://${shown}:${bound}${workers > 1 ? ` (${workers} workers)` : ""}`);
}

/** `--workers`: a count, or `auto` for the number of cores (default 1). */
function workerCount(text: string | undefined): number {
  if (text === undefined) return 1;
  if (text === "auto") return Math.max(1, navigator.hardwareConcurrency || 1);
  if (!/^[0-9]{1,3}$/.test(text) || Number(text) < 1 || Number(text) > 256) {
    fail(`invalid --workers: ${JSON.stringify(text)} (a count or "auto")`);
  }
  return Number(text);
}

/** Starts `count` worker threads, each a proxy on the same port; resolves when all listen. */
function startWorkers(
  count: number,
  options: ProxyOptions,
  logLevel: LogLevel,
  hooksModule: string | undefined,
  accessLog: AccessLogConfig | null,
): Promise<Worker[]> {
  const started = Array.from({ length: count }, () =>
    new Promise<Worker>((resolve) => {
      const worker = new Worker(import.meta.resolve("./lib/worker.ts"), { type: "module" });
      worker.onerror = (event) => {
        event.preventDefault();
        console.error(`waypost: a worker failed: ${event.message}`);
        Deno.exit(1);
      };
      worker.onmessage = (event) => {
        if (event.data?.type === "listening") resolve(worker);
        else if (event.data?.type === "error") {
          console.error(`waypost: a worker cannot listen: ${event.data.message}`);
          Deno.exit(1);
        }
      };
      worker.postMessage({ type: "start", options, logLevel, hooksModule, accessLog });
    }));
  return Promise.all(started);
}

/** Asks a worker to shut down gracefully and waits until it has stopped. */
function stopWorker(worker: Worker, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      worker.terminate();
      resolve();
    };
    // A worker that does not report back within the grace period (plus a margin) is terminated.
    const timer = setTimeout(done, graceMs + 2000);
    worker.onmessage = (event) => {
      if (event.data?.type === "stopped") done();
    };
    worker.postMessage({ type: "shutdown", graceMs });
  });
}

// `deno task start -- --port 1` passes the "--" through; accept it.
await main(Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args);
