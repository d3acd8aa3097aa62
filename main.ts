/**
 * The command-line interface: flags -> options -> {@link startProxy}; signals
 * and exit codes. Exit 0 after a graceful stop, 2 for bad flags, 1 when the
 * proxy cannot start.
 *
 * @module
 */
import { consoleLogger, type LogLevel } from "./lib/log.ts";
import { DEFAULTS, newInstanceId, type ProxyOptions } from "./lib/options.ts";
import { hooksSpecifier, loadHooks } from "./lib/hooks_loader.ts";
import { type AccessLogConfig, accessLogFor, type LogFormat, reopenAccessLog } from "./lib/access_log.ts";
import {
  DEFAULT_GRACE_MS,
  parseCommandLine,
  parseConfig,
  proxyOptionsFrom,
  restartNeeded,
  type Settings,
  usage,
  UsageError,
} from "./lib/cli.ts";
import { VERSION } from "./lib/version.ts";
import type { MetricsSnapshot } from "./lib/metrics.ts";
import { parseAuthFile } from "./lib/auth.ts";
import type { ProxyHooks } from "./lib/hooks.ts";
import { startProxy } from "./lib/server.ts";

function fail(message: string): never {
  console.error(`waypost: ${message}`);
  console.error(usage());
  Deno.exit(2);
}

/** Reads a file a flag names; throws UsageError naming the flag, the reason and the permission to give. */
function readFlagFile(flag: string, path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    const hint = error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied
      ? ` (run with --allow-read=${path})`
      : "";
    throw new UsageError(`cannot read --${flag} ${path}: ${error instanceof Error ? error.message : error}${hint}`);
  }
}

/** Reads and validates the --config file; throws UsageError with the reason. */
function readConfig(path: string): Settings {
  return parseConfig(readFlagFile("config", path), path);
}

/** The proxy's options from the settings, with the users of --auth-file read in. */
function proxyOptionsWithFiles(settings: Settings): ProxyOptions {
  const options = proxyOptionsFrom(settings);
  const path = settings["auth-file"] as string | undefined;
  if (path === undefined) return options;
  const text = readFlagFile("auth-file", path);
  try {
    return { ...options, auth: [...(options.auth ?? []), ...parseAuthFile(text, path)] };
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** The access log's settings from the options. */
function logConfigFrom(settings: Settings): AccessLogConfig | null {
  const file = (settings["log-file"] as string | undefined) ?? null;
  const format = (settings["log-format"] as string | undefined) ??
    (Deno.stdout.isTerminal() && file === null ? "text" : "json");
  return format === "none" ? null : { format: format as LogFormat, file, query: settings["log-query"] === true };
}

async function main(args: string[]): Promise<void> {
  let cli;
  let fileSettings: Settings = {};
  try {
    cli = parseCommandLine(args);
    if (cli.help) {
      console.log(usage());
      return;
    }
    if (cli.version) {
      console.log(`waypost ${VERSION}`);
      return;
    }
    if (cli.config !== null) fileSettings = readConfig(cli.config);
  } catch (error) {
    if (error instanceof UsageError) fail(error.message);
    throw error;
  }
  // Flags override the file.
  let settings: Settings = { ...fileSettings, ...cli.settings };
  const values = settings;
  const level = (values["log-level"] ?? "info") as LogLevel;
  let graceMs = (values.grace as number | undefined) ?? DEFAULT_GRACE_MS;
  let options: ProxyOptions;
  try {
    options = { ...proxyOptionsWithFiles(settings), logger: consoleLogger(level) };
  } catch (error) {
    if (error instanceof UsageError) fail(error.message);
    throw error;
  }
  // One tag for every thread of this process: a loop through any of them is a loop through this proxy.
  const instanceId = newInstanceId();
  options.instanceId = instanceId;
  const logConfig = logConfigFrom(settings);
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
  const hooksModule = values.hooks === undefined ? undefined : hooksSpecifier(values.hooks as string, Deno.cwd());
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

  const workers = values.workers === "auto"
    ? Math.max(1, navigator.hardwareConcurrency || 1)
    : (values.workers as number | undefined) ?? 1;
  if (workers > 1) {
    // Worker threads load lib/ themselves: from a local checkout that needs read access to it (a remote
    // main.ts loads them by URL instead). SO_REUSEPORT is behind --unstable-net; without it Deno would
    // exit on the listen call.
    const lib = new URL("./lib/", import.meta.url);
    const local = lib.protocol === "file:";
    const readable = !local || Deno.permissions.querySync({ name: "read", path: lib }).state === "granted";
    const unstable = typeof (Deno as unknown as Record<string, unknown>).listenDatagram === "function";
    if (!readable || !unstable) {
      const libPath = local ? decodeURIComponent(lib.pathname) : "";
      const needs = [!unstable && "--unstable-net (SO_REUSEPORT)", !readable && `read access to ${libPath}`];
      const self = local ? decodeURIComponent(new URL(import.meta.url).pathname) : import.meta.url;
      const read = local ? `--allow-read=${libPath} ` : "";
      fail(
        `--workers ${values.workers} needs ${needs.filter(Boolean).join(" and ")}, e.g.\n` +
          `  deno run --allow-net ${read}--unstable-net ${self} --workers ${values.workers}\n` +
          "  (or: deno task start:workers)",
      );
    }
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
  // The access log's written and dropped lines are metrics too (read at scrape time, no second count).
  if (access !== null) proxy.metrics?.watchAccessLog(access.log);
  const { hostname, port: bound } = proxy.addr;
  const threads = await startWorkers(
    workers - 1,
    { ...options, logger: undefined, hooks: undefined, port: bound, adminPort: 0 },
    level,
    hooksModule,
    logConfig,
    (thread, snapshot) => proxy.metrics?.setRemote(thread, snapshot),
  );
  const shown = hostname.includes(":") ? `[${hostname}]` : hostname;

  let signals = 0;
  const onSignal = () => {
    if (++signals > 1) Deno.exit(0); // a second signal exits at once
    // Each thread keeps serving for the drain delay, then has the grace period: wait for both.
    const drainMs = (settings["drain-delay"] as number | undefined) ?? 0;
    Promise.all([proxy.shutdown(graceMs), ...threads.map((w) => stopWorker(w, graceMs, drainMs))])
      .then(() => access?.log.flush(1000))
      .catch((error) => console.error(`waypost: shutdown: ${error instanceof Error ? error.message : error}`))
      .finally(() => Deno.exit(0));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  // SIGHUP: the --config file is read again and applied to new connections and exchanges (an invalid
  // one is reported and the running options stay); the log file is reopened (log rotation).
  Deno.addSignalListener("SIGHUP", () => {
    // With --config the file is read again; with --auth-file alone the users are.
    const reloading = cli.config !== null || settings["auth-file"] !== undefined;
    if (reloading) {
      try {
        const next: Settings = { ...(cli.config === null ? {} : readConfig(cli.config)), ...cli.settings };
        const fixed = restartNeeded(settings, next);
        for (const name of fixed) next[name] = settings[name] as Settings[string];
        const fresh = { ...proxyOptionsWithFiles(next), logger: options.logger, instanceId };
        delete fresh.hostname;
        delete fresh.port;
        proxy.reconfigure(fresh);
        for (const worker of threads) {
          // The admin port is the main thread's alone.
          worker.postMessage({ type: "reconfigure", options: { ...fresh, logger: undefined, adminPort: 0 } });
        }
        const nextLog = logConfigFrom(next);
        if (access !== null && nextLog !== null && logConfig !== null) {
          access.log.configure({ format: nextLog.format, query: nextLog.query });
          logConfig.format = nextLog.format;
          logConfig.query = nextLog.query;
          logConfig.file = nextLog.file;
        } else if ((access === null) !== (nextLog === null)) fixed.push("log-format (none)");
        settings = next;
        graceMs = (next.grace as number | undefined) ?? DEFAULT_GRACE_MS;
        const what = [cli.config, next["auth-file"]].filter((x) => x !== null && x !== undefined).join(" and ");
        console.error(
          `waypost: reloaded ${what}${fixed.length > 0 ? `; needs a restart to change: ${fixed.join(", ")}` : ""}`,
        );
      } catch (error) {
        console.error(
          `waypost: reload failed, the running options stay: ${error instanceof Error ? error.message : error}`,
        );
      }
    }
    for (const worker of threads) worker.postMessage({ type: "reopen-log", accessLog: logConfig });
    if (access !== null && logConfig !== null && logConfig.file !== null) {
      const problem = reopenAccessLog(access, logConfig);
      if (problem !== null) console.error(`waypost: ${problem}`);
    } else if (!reloading) {
      console.error("waypost: SIGHUP ignored: no --config or --auth-file to reload and no --log-file to reopen");
    }
  });
  // The listening line comes last: whoever waits for it may signal at once, and the handlers are in place.
  console.log(`waypost listening on http://${shown}:${bound}${workers > 1 ? ` (${workers} workers)` : ""}`);
}

/** Starts `count` worker threads, each a proxy on the same port; resolves when all listen. */
function startWorkers(
  count: number,
  options: ProxyOptions,
  logLevel: LogLevel,
  hooksModule: string | undefined,
  accessLog: AccessLogConfig | null,
  onMetrics: (thread: number, snapshot: MetricsSnapshot) => void,
): Promise<Worker[]> {
  const started = Array.from({ length: count }, (_, index) =>
    new Promise<Worker>((resolve) => {
      const worker = new Worker(import.meta.resolve("./lib/worker.ts"), { type: "module" });
      worker.onerror = (event) => {
        event.preventDefault();
        console.error(`waypost: a worker failed: ${event.message}`);
        Deno.exit(1);
      };
      worker.onmessage = (event) => {
        if (event.data?.type === "metrics") onMetrics(index + 1, event.data.snapshot);
        else if (event.data?.type === "listening") resolve(worker);
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
function stopWorker(worker: Worker, graceMs: number, drainMs: number): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      worker.terminate();
      resolve();
    };
    // A worker that does not report back within the drain delay and grace period (plus a margin) is terminated.
    const timer = setTimeout(done, drainMs + graceMs + 2000);
    worker.onmessage = (event) => {
      if (event.data?.type === "stopped") done();
    };
    worker.postMessage({ type: "shutdown", graceMs });
  });
}

// `deno task start -- --port 1` passes the "--" through; accept it.
await main(Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args);
