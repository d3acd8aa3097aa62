/**
 * The one table of the command line's options: each entry is a flag, a key
 * of the configuration file (same name), where it goes in
 * {@link ProxyOptions}, its default as shown, its help, and whether a reload
 * can change it. `--help`, the README's flag table (checked by a test), flag
 * parsing and config file validation are all made from it. Pure: no I/O.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parseCidr } from "./cidr.ts";
import { parseHostRule } from "./rules.ts";
import { LOG_LEVELS } from "./log.ts";
import { DEFAULTS, MAX_TIMEOUT_MS, parseDuration, type ProxyOptions } from "./options.ts";

/** How a value is written and checked. */
export type ValueType =
  | "string"
  | "host"
  | "port"
  | "duration"
  | "count"
  | "boolean"
  | "ports"
  | "cidrs"
  | "strings"
  | "rules"
  | "choice"
  | "workers"
  | "log-format"
  | "log-level";

/** One option: a flag and a config key of the same name. */
export interface OptionEntry {
  /** Flag and config key (`connect-timeout`). */
  readonly name: string;
  readonly type: ValueType;
  /** The {@link ProxyOptions} key it sets, if any (others are the CLI's own). */
  readonly option?: keyof ProxyOptions;
  /** The placeholder after the flag in help (`D`, `N`, `HOST`); none for a switch. */
  readonly arg?: string;
  /** The default as shown in help and the README. */
  readonly shown: string;
  readonly help: string;
  /** Whether a reload (SIGHUP) cannot change it: a restart is needed. */
  readonly restart?: boolean;
  /** A one-letter alias. */
  readonly short?: string;
  /** Only a flag, never a config key (`--config`, `--help`). */
  readonly flagOnly?: boolean;
  /** A flag that adds `allow VALUE` or `deny VALUE` to `host-rules`, in command-line order. */
  readonly rule?: "allow" | "deny";
  /** For `choice`: the values it takes. */
  readonly choices?: readonly string[];
}

/** Formats ms the way durations are written (`10s`, `2m`, `500ms`, `0` for off). */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0";
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** Default shutdown grace period (the CLI's own option). */
export const DEFAULT_GRACE_MS = 10_000;

const d = formatDuration;

/** Every option, in the order of `--help` and the README. */
export const OPTIONS: readonly OptionEntry[] = Object.freeze(
  [
    {
      name: "config",
      type: "string",
      arg: "FILE",
      shown: "none",
      flagOnly: true,
      help: "read options from a JSON file (comments allowed); flags override it; re-read on SIGHUP",
    },
    {
      name: "host",
      type: "host",
      option: "hostname",
      arg: "HOST",
      shown: DEFAULTS.hostname,
      restart: true,
      help: "address to listen on",
    },
    {
      name: "port",
      type: "port",
      option: "port",
      arg: "PORT",
      shown: String(DEFAULTS.port),
      restart: true,
      help: "port to listen on; 0 picks a free port",
    },
    {
      name: "via",
      type: "string",
      option: "via",
      arg: "NAME",
      shown: DEFAULTS.via,
      help: "pseudonym written in Via; a request already carrying it is a loop (508)",
    },
    {
      name: "connect-timeout",
      type: "duration",
      option: "connectTimeoutMs",
      arg: "D",
      shown: d(DEFAULTS.connectTimeoutMs),
      help: "upstream connect timeout, then 504",
    },
    {
      name: "response-timeout",
      type: "duration",
      option: "responseTimeoutMs",
      arg: "D",
      shown: d(DEFAULTS.responseTimeoutMs),
      help: "wait for the origin's response head, then 504",
    },
    {
      name: "header-timeout",
      type: "duration",
      option: "headerTimeoutMs",
      arg: "D",
      shown: d(DEFAULTS.headerTimeoutMs),
      help: "time to receive a request head (also for a connection that sends nothing)",
    },
    {
      name: "idle-timeout",
      type: "duration",
      option: "idleTimeoutMs",
      arg: "D",
      shown: d(DEFAULTS.idleTimeoutMs),
      help: "keep-alive idle time between requests on a client connection",
    },
    {
      name: "body-timeout",
      type: "duration",
      option: "bodyTimeoutMs",
      arg: "D",
      shown: d(DEFAULTS.bodyTimeoutMs),
      help: "a body (either way) with no byte for this long aborts the exchange",
    },
    {
      name: "max-connections",
      type: "count",
      option: "maxConnections",
      arg: "N",
      shown: String(DEFAULTS.maxConnections),
      help: "open client connections at most; more get 503 + Retry-After",
    },
    {
      name: "max-connections-per-client",
      type: "count",
      option: "maxConnectionsPerClient",
      arg: "N",
      shown: String(DEFAULTS.maxConnectionsPerClient),
      help: "the same, per client address",
    },
    {
      name: "grace",
      type: "duration",
      arg: "D",
      shown: d(DEFAULT_GRACE_MS),
      help: "shutdown grace period for in-flight exchanges",
    },
    {
      name: "drain-delay",
      type: "duration",
      option: "drainDelayMs",
      arg: "D",
      shown: d(DEFAULTS.drainDelayMs),
      help: "on shutdown, keep serving this long with /healthz 503 first (load balancers)",
    },
    {
      name: "connect-ports",
      type: "ports",
      option: "connectPorts",
      arg: "LIST",
      shown: String(DEFAULTS.connectPorts),
      help: "ports CONNECT may reach: 443,8443 or '*' for any",
    },
    {
      name: "tunnel-idle-timeout",
      type: "duration",
      option: "tunnelIdleTimeoutMs",
      arg: "D",
      shown: d(DEFAULTS.tunnelIdleTimeoutMs),
      help: "close tunnels with no bytes either way for this long; 0 = never",
    },
    {
      name: "workers",
      type: "workers",
      arg: "N",
      shown: "1",
      restart: true,
      help: "event loops (threads) sharing the port; auto = one per core (see README)",
    },
    {
      name: "hooks",
      type: "string",
      arg: "FILE_OR_URL",
      shown: "none",
      restart: true,
      help: "a module whose default export is hooks; a file needs --allow-read, a URL --allow-import",
    },
    {
      name: "hook-timeout",
      type: "duration",
      option: "hookTimeoutMs",
      arg: "D",
      shown: d(DEFAULTS.hookTimeoutMs),
      help: "an asynchronous hook not settled by then fails with 500; 0 = no limit",
    },
    {
      name: "proxy-status-details",
      type: "boolean",
      option: "proxyStatusDetails",
      shown: "off",
      help: "Proxy-Status on error answers also names the stable error code",
    },
    {
      name: "timing-header",
      type: "boolean",
      option: "timingHeader",
      shown: "off",
      help: "add Server-Timing (connect, ttfb, proxy, total) to forwarded responses",
    },
    {
      name: "auth",
      type: "strings",
      option: "auth",
      arg: "USER:PASS",
      shown: "none",
      help: "a user who may use the proxy (repeatable; Basic, 407 for others); never logged",
    },
    {
      name: "auth-file",
      type: "string",
      arg: "PATH",
      shown: "none",
      help: "users from a file, one user:password per line, # comments (needs --allow-read=PATH); re-read on SIGHUP",
    },
    {
      name: "auth-realm",
      type: "string",
      option: "authRealm",
      arg: "TEXT",
      shown: DEFAULTS.authRealm,
      help: "the realm in Proxy-Authenticate",
    },
    {
      name: "allow-client",
      type: "cidrs",
      option: "allowClient",
      arg: "CIDR",
      shown: "everyone",
      help: "only these clients may connect; others are closed (repeatable)",
    },
    {
      name: "allow-host",
      type: "rules",
      rule: "allow",
      flagOnly: true,
      arg: "PATTERN",
      shown: "",
      help: "allow a destination: name, *.suffix, IP/CIDR, *, each with an optional :port (adds to host-rules)",
    },
    {
      name: "deny-host",
      type: "rules",
      rule: "deny",
      flagOnly: true,
      arg: "PATTERN",
      shown: "",
      help: "deny a destination (403 naming the rule); with --allow-host, the first match in order wins",
    },
    {
      name: "host-rules",
      type: "rules",
      option: "hostRules",
      arg: "RULE",
      shown: "none",
      help: 'destination rules in order, "allow PATTERN" or "deny PATTERN" (config key; flags above add to it)',
    },
    {
      name: "host-default",
      type: "choice",
      choices: ["allow", "deny"],
      option: "hostDefault",
      arg: "ACTION",
      shown: DEFAULTS.hostDefault,
      help: "what a destination no rule matches gets: allow or deny",
    },
    {
      name: "allow-private",
      type: "boolean",
      option: "allowPrivate",
      shown: "off",
      help: "let a proxy listening beyond loopback reach loopback, private and link-local (metadata) addresses",
    },
    {
      name: "allow-open",
      type: "boolean",
      option: "allowOpen",
      shown: "off",
      restart: true,
      help: "listen beyond loopback without --auth or --allow-client (an open proxy)",
    },
    {
      name: "upstream-proxy",
      type: "string",
      option: "upstreamProxy",
      arg: "URL",
      shown: "none",
      help: "a parent proxy, http://[user:pass@]host:port: requests and CONNECT go through it",
    },
    {
      name: "no-proxy",
      type: "string",
      option: "noProxy",
      arg: "LIST",
      shown: "none",
      help: "destinations that skip the parent: names, .suffix, *, CIDRs, each with an optional :port",
    },
    {
      name: "admin-allow",
      type: "cidrs",
      option: "adminAllow",
      arg: "CIDR",
      shown: "loopback",
      help: "clients that may read /metrics, / and /healthz (repeatable)",
    },
    {
      name: "proxy-protocol",
      type: "boolean",
      option: "proxyProtocol",
      shown: "off",
      restart: true,
      help: "every connection starts with a PROXY protocol v1/v2 header from --trusted-proxies; others are closed",
    },
    {
      name: "trusted-proxies",
      type: "cidrs",
      option: "trustedProxies",
      arg: "CIDR",
      shown: "none",
      help: "load balancers whose PROXY headers are believed (repeatable; required with --proxy-protocol)",
    },
    {
      name: "proxy-protocol-timeout",
      type: "duration",
      option: "proxyProtocolTimeoutMs",
      arg: "D",
      shown: d(DEFAULTS.proxyProtocolTimeoutMs),
      help: "no complete PROXY header within this long closes the connection",
    },
    {
      name: "admin-port",
      type: "port",
      option: "adminPort",
      arg: "PORT",
      shown: "none",
      restart: true,
      help: "a second port serving only the proxy's own pages, without the PROXY protocol (probes)",
    },
    {
      name: "no-metrics",
      type: "boolean",
      shown: "off",
      restart: true,
      help: "count nothing for /metrics and the status page (saves a record per exchange)",
    },
    {
      name: "no-memory-release",
      type: "boolean",
      shown: "off",
      restart: true,
      help: "never ask V8 for a memory-reducing collection when idle after the heap grew (a pause of tens of ms)",
    },
    {
      name: "log-format",
      type: "log-format",
      arg: "F",
      shown: "text or json",
      help: "access log: json, squid, common, text or none; text on a terminal, else json",
    },
    {
      name: "log-file",
      type: "string",
      arg: "PATH",
      shown: "stdout",
      help: "append the access log to PATH (needs --allow-write=PATH); reopened on SIGHUP",
    },
    {
      name: "log-query",
      type: "boolean",
      shown: "off",
      help: "keep query strings in the access log (stripped by default)",
    },
    {
      name: "log-level",
      type: "log-level",
      arg: "L",
      shown: "info",
      restart: true,
      help: "diagnostics on stderr: debug, info, warn, error or silent",
    },
    { name: "help", type: "boolean", short: "h", shown: "", flagOnly: true, help: "print this help and exit" },
    { name: "version", type: "boolean", short: "V", shown: "", flagOnly: true, help: "print the version and exit" },
  ] satisfies OptionEntry[],
);

const BY_NAME: ReadonlyMap<string, OptionEntry> = new Map(OPTIONS.map((o) => [o.name, o]));

/** Validated settings by option name: durations in ms, lists as arrays. */
export type Settings = Record<string, string | number | boolean | readonly string[] | readonly number[]>;

/** A flag or config value that cannot be used; the message names it, the value and why. */
export class UsageError extends Error {}

/** The access log formats `--log-format` takes (`none`: no access log). */
export const LOG_FORMAT_NAMES = ["json", "squid", "common", "text", "none"] as const;

/**
 * Checks one value (a flag's text, or a config file's JSON value) for its
 * option and returns it in its settings form.
 *
 * @throws {UsageError} naming where it came from (`--port` or `"port"`), the value and the reason.
 */
export function parseValue(entry: OptionEntry, value: unknown, where: string): Settings[string] {
  const bad = (why: string): never => {
    throw new UsageError(`${where} ${JSON.stringify(value)}: ${why}`);
  };
  const text = typeof value === "number" ? String(value) : value;
  switch (entry.type) {
    case "boolean":
      if (typeof value !== "boolean") bad("expected true or false");
      return value as boolean;
    case "string":
    case "host":
      if (typeof value !== "string" || value === "") bad("expected a non-empty string");
      return value as string;
    case "port":
      if (typeof text !== "string" || !/^[0-9]{1,5}$/.test(text) || Number(text) > 65535) {
        bad("expected a port 0-65535");
      }
      return Number(text);
    case "count":
      if (typeof text !== "string" || !/^[0-9]{1,9}$/.test(text) || Number(text) < 1) {
        bad("expected a whole number from 1");
      }
      return Number(text);
    case "duration": {
      if (typeof text !== "string") return bad("expected a duration such as 500ms, 10s, 2m, 1h");
      const ms = parseDuration(text);
      if (Number.isNaN(ms)) bad("expected a duration such as 500ms, 10s, 2m, 1h (a bare number means seconds)");
      if (ms > MAX_TIMEOUT_MS) bad(`too long: at most ${Math.floor(MAX_TIMEOUT_MS / 3_600_000)}h`);
      return ms;
    }
    case "ports": {
      if (text === "*") return "*";
      const list = Array.isArray(value)
        ? value.map(String)
        : typeof text === "string"
        ? text.split(",")
        : bad('expected a list of ports or "*"');
      return list.map((p) => {
        const t = p.trim();
        if (!/^[0-9]{1,5}$/.test(t) || Number(t) < 1 || Number(t) > 65535) {
          bad(`${JSON.stringify(t)} is not a port 1-65535`);
        }
        return Number(t);
      });
    }
    case "strings": {
      const list = Array.isArray(value) ? value : [value];
      return list.map((v) => typeof v === "string" && v !== "" ? v : bad("expected non-empty strings"));
    }
    case "rules": {
      const list = Array.isArray(value) ? value : [value];
      return list.map((v) => {
        const text = entry.rule !== undefined ? `${entry.rule} ${v}` : v;
        if (typeof v !== "string") return bad('expected rules such as "deny *.ads.test"');
        try {
          return parseHostRule(text as string).text;
        } catch (error) {
          throw new UsageError(`${where} ${JSON.stringify(v)}: ${(error as Error).message}`);
        }
      });
    }
    case "choice":
      if (!(entry.choices ?? []).includes(text as string)) bad(`expected one of ${entry.choices?.join(", ")}`);
      return text as string;
    case "cidrs": {
      const list = Array.isArray(value) ? value : [value];
      return list.map((c) => {
        if (typeof c !== "string") return bad("expected CIDR ranges such as 10.0.0.0/8 or ::1");
        try {
          return parseCidr(c.trim()).text;
        } catch (error) {
          throw new UsageError(`${where} ${JSON.stringify(c)}: ${(error as Error).message}`);
        }
      });
    }
    case "workers":
      if (text === "auto") return "auto";
      if (typeof text !== "string" || !/^[0-9]{1,3}$/.test(text) || Number(text) < 1 || Number(text) > 256) {
        bad('expected a count 1-256 or "auto"');
      }
      return Number(text);
    case "log-format":
      if (!(LOG_FORMAT_NAMES as readonly unknown[]).includes(text)) {
        bad(`expected one of ${LOG_FORMAT_NAMES.join(", ")}`);
      }
      return text as string;
    case "log-level":
      if (!(LOG_LEVELS as readonly unknown[]).includes(text)) bad(`expected one of ${LOG_LEVELS.join(", ")}`);
      return text as string;
  }
}

/** The command line, parsed: settings from flags, and the switches that end at once. */
export interface CommandLine {
  settings: Settings;
  help: boolean;
  version: boolean;
  config: string | null;
}

/**
 * Parses the command line against {@link OPTIONS}.
 *
 * @throws {UsageError} for an unknown flag, a missing or bad value.
 */
export function parseCommandLine(args: string[]): CommandLine {
  const spec: Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }> = {};
  for (const o of OPTIONS) {
    const multiple = o.type === "cidrs" || o.type === "strings" || o.type === "rules";
    spec[o.name] = { type: o.type === "boolean" ? "boolean" : "string", multiple };
    if (o.short !== undefined) spec[o.name].short = o.short;
  }
  let values: Record<string, unknown>;
  let tokens: { kind: string; name?: string; value?: string }[];
  try {
    ({ values, tokens } = parseArgs({ args, strict: true, allowPositionals: false, options: spec, tokens: true }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const settings: Settings = {};
  for (const [name, value] of Object.entries(values)) {
    const entry = BY_NAME.get(name)!;
    if (entry.flagOnly || value === undefined) continue;
    settings[name] = parseValue(entry, value, `--${name}`);
  }
  // --allow-host and --deny-host add to host-rules in the order given (the first match wins).
  const rules: string[] = [...(settings["host-rules"] as string[] | undefined ?? [])];
  for (const token of tokens) {
    const entry = token.kind === "option" && token.name !== undefined ? BY_NAME.get(token.name) : undefined;
    if (entry?.rule === undefined) continue;
    rules.push(...parseValue(entry, token.value, `--${entry.name}`) as string[]);
  }
  if (rules.length > 0) settings["host-rules"] = rules;
  return {
    settings,
    help: values.help === true,
    version: values.version === true,
    config: typeof values.config === "string" ? values.config : null,
  };
}

/**
 * Parses a configuration file: a JSON object whose keys are the flag names,
 * with `//` and `/* *\/` comments allowed. Durations are written as for the
 * flags (`"10s"`), counts and ports as numbers, switches as true or false,
 * lists as arrays.
 *
 * @throws {UsageError} naming the file and the key, value and reason of the first problem.
 */
export function parseConfig(text: string, source: string): Settings {
  let data: unknown;
  try {
    data = JSON.parse(stripComments(text));
  } catch (error) {
    throw new UsageError(`${source}: not JSON: ${(error as Error).message}`);
  }
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new UsageError(`${source}: expected a JSON object of options`);
  }
  const settings: Settings = {};
  for (const [key, value] of Object.entries(data)) {
    const entry = BY_NAME.get(key);
    if (entry === undefined || entry.flagOnly) {
      throw new UsageError(`${source}: unknown key ${JSON.stringify(key)} (the keys are the flag names, e.g. "port")`);
    }
    settings[key] = parseValue(entry, value, `${source}: key "${key}"`);
  }
  return settings;
}

/** Removes `//` and `/* *\/` comments outside strings (JSON with comments). */
export function stripComments(text: string): string {
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      const start = i;
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === "\\") i++;
      out += text.slice(start, i + 1);
    } else if (c === "/" && text[i + 1] === "/") {
      while (i < text.length && text[i] !== "\n") i++;
      out += "\n";
    } else if (c === "/" && text[i + 1] === "*") {
      const end = text.indexOf("*/", i + 2);
      if (end === -1) throw new UsageError("an unterminated /* comment");
      out += text.slice(i, end + 2).replace(/[^\n]/g, " ");
      i = end + 1;
    } else out += c;
  }
  return out;
}

/** The {@link ProxyOptions} the settings give (the CLI's own options left out). */
export function proxyOptionsFrom(settings: Settings): ProxyOptions {
  const options: Record<string, unknown> = {};
  for (const entry of OPTIONS) {
    if (entry.option !== undefined && settings[entry.name] !== undefined) options[entry.option] = settings[entry.name];
  }
  if (settings["no-metrics"] === true) options.metrics = false;
  if (settings["no-memory-release"] === true) options.memoryRelease = false;
  return options as ProxyOptions;
}

/** The names of restart-only options whose values differ between two settings. */
export function restartNeeded(before: Settings, after: Settings): string[] {
  return OPTIONS.filter((o) => o.restart && JSON.stringify(before[o.name]) !== JSON.stringify(after[o.name]))
    .map((o) => o.name);
}

function flagText(o: OptionEntry): string {
  const flag = `--${o.name}${o.arg ? ` ${o.arg}` : ""}`;
  return o.short ? `-${o.short}, ${flag}` : flag;
}

/** `--help`. */
export function usage(): string {
  const lines = OPTIONS.map((o) => {
    const left = `  ${flagText(o)}`;
    const def = o.shown && o.shown !== "off" && o.shown !== "none" ? ` (default ${o.shown})` : "";
    return `${left.padEnd(34)}${left.length >= 34 ? "\n" + " ".repeat(34) : ""}${o.help}${def}`;
  });
  return `Usage: waypost [options]

A forward HTTP/1.1 proxy. Point clients at it with http_proxy=http://HOST:PORT.

Options (each is also a key of the --config file, by the same name):
${lines.join("\n")}

Durations: 500ms, 10s, 2m, 1h (a bare number means seconds); 0 turns a timeout off.
SIGHUP re-reads --config and --auth-file (options marked "restart" in the README keep their value) and reopens
--log-file.`;
}

/** The README's flag table (a test keeps the README equal to it). */
export function markdownTable(): string {
  const rows = OPTIONS.map((o) => {
    const flag = o.short ? `\`-${o.short}\`, \`--${o.name}\`` : `\`--${o.name}${o.arg ? ` ${o.arg}` : ""}\``;
    const def = o.shown === ""
      ? ""
      : /^[0-9a-z.*,:/]+$/i.test(o.shown) && !/ /.test(o.shown)
      ? `\`${o.shown}\``
      : o.shown;
    return [flag, def, o.flagOnly ? "flag only" : o.restart ? "restart" : "yes", o.help.replace(/\|/g, "\\|")];
  });
  const head = ["flag / config key", "default", "reload", "meaning"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  return [line(head), `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`, ...rows.map(line)].join("\n");
}
