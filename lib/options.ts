/**
 * Proxy options, their defaults, and parsing of durations such as `10s`.
 *
 * @module
 */
import { hasControl, parseCredential } from "./auth.ts";
import { parseCidr } from "./cidr.ts";
import { parseHostRule } from "./rules.ts";
import { parseNoProxy, parseParentProxy } from "./parent.ts";
import type { ProxyHooks } from "./hooks.ts";
import type { Logger } from "./log.ts";
import type { TunnelStats } from "./tunnel.ts";

/** Options for starting a proxy. Every field is optional; defaults in brackets. */
export interface ProxyOptions {
  /** Address to listen on [`127.0.0.1`]. */
  hostname?: string;
  /** Port to listen on; 0 picks a free port [3128]. */
  port?: number;
  /** Pseudonym written in `Via` and used to detect forwarding loops [`waypost`]. */
  via?: string;
  /** Upstream connect timeout in ms; over it: 504 [10000]. */
  connectTimeoutMs?: number;
  /** Wait for the origin's response head in ms; over it: 504 [60000]. */
  responseTimeoutMs?: number;
  /** Time to receive a whole request head, from connect or first byte, in ms [30000]. */
  headerTimeoutMs?: number;
  /** Keep-alive idle time between requests on a client connection, in ms [60000]. */
  idleTimeoutMs?: number;
  /** A body (either way) without a byte for this long aborts the exchange, in ms [120000]. */
  bodyTimeoutMs?: number;
  /** Open client connections at most; more are answered 503 and closed [4096]. */
  maxConnections?: number;
  /** Open connections per client address at most; more are answered 503 and closed [256]. */
  maxConnectionsPerClient?: number;
  /** Longest request line in bytes; over it: 414 [8192]. */
  maxRequestLineBytes?: number;
  /** Longest request head in bytes; over it: 431 [65536]. */
  maxHeadBytes?: number;
  /** Most header fields in a head; over it: 431 [1000] (the byte limit is the real bound). */
  maxFields?: number;
  /** Ports CONNECT may reach; `"*"` allows all [[443]]. */
  connectPorts?: readonly number[] | "*";
  /** Close a CONNECT tunnel with no bytes either way for this long, in ms; 0 = never [0]. */
  tunnelIdleTimeoutMs?: number;
  /** Idle upstream keep-alive connections kept per origin [256]. */
  maxIdlePerOrigin?: number;
  /** How long an idle upstream connection is kept, in ms [30000]. */
  upstreamIdleTimeoutMs?: number;
  /** Where log records go [a logger that prints warnings and errors to stderr]. */
  logger?: Logger;
  /**
   * Share the port with other listeners (SO_REUSEPORT), as `--workers` does; needs
   * `--unstable-net` [false].
   */
  reusePort?: boolean;
  /** Aborting this signal starts a graceful shutdown. */
  signal?: AbortSignal;
  /** Called when a CONNECT tunnel or upgraded connection ends, with its byte counts and ending. */
  onTunnelEnd?: (stats: TunnelStats) => void;
  /**
   * Hooks into every exchange (see {@link ProxyHooks}): one object or an array,
   * composed in order; the first hook that answers wins [none].
   */
  hooks?: ProxyHooks | readonly ProxyHooks[];
  /** An asynchronous hook that has not settled after this many ms fails the exchange with 500; 0 = no limit [30000]. */
  hookTimeoutMs?: number;
  /**
   * `Proxy-Status` on the proxy's own error answers also carries the stable error code
   * (`details="upstream-refused"`); it tells clients more about the path [false].
   */
  proxyStatusDetails?: boolean;
  /**
   * Clients (CIDR ranges, IPv4 or IPv6) that may read the proxy's own admin
   * pages: `/metrics`, `/` (status) and `/healthz` [loopback: `127.0.0.0/8`, `::1`].
   */
  adminAllow?: readonly string[];
  /** Count every exchange for `/metrics` and the status page (costs a record per exchange) [true]. */
  metrics?: boolean;
  /** Add `Server-Timing` (connect, origin, proxy, total) to every forwarded response [false]. */
  timingHeader?: boolean;
  /**
   * Give heap memory back once idle: after 3 s without an exchange, if the heap
   * has grown by 4 MiB since the last time, ask V8 for a memory-reducing full
   * collection (a pause of tens of milliseconds) [true].
   */
  memoryRelease?: boolean;
  /**
   * On shutdown, keep serving this long with `/healthz` answering 503 (so a load
   * balancer stops sending) before the listener closes, in ms [0].
   */
  drainDelayMs?: number;
  /**
   * Every connection starts with a PROXY protocol header (v1 or v2, HAProxy's
   * `proxy-protocol.txt`) from a trusted load balancer: the client address it
   * carries replaces the socket's for limits, logs, metrics and hooks.
   * Needs `trustedProxies`; connections from other addresses are closed [false].
   */
  proxyProtocol?: boolean;
  /** The load balancers (CIDR ranges) whose PROXY headers are believed; required with `proxyProtocol` [none]. */
  trustedProxies?: readonly string[];
  /** No complete PROXY header within this long closes the connection, in ms [5000]. */
  proxyProtocolTimeoutMs?: number;
  /**
   * `user:password` entries: requests and CONNECT without matching Basic
   * `Proxy-Authorization` get 407 [none: no authentication].
   */
  auth?: readonly string[];
  /** The realm in `Proxy-Authenticate` [`waypost`]. */
  authRealm?: string;
  /** Only clients in these CIDR ranges may connect; others are closed [everyone]. */
  allowClient?: readonly string[];
  /**
   * Destination rules in order, `allow PATTERN` or `deny PATTERN` (PATTERN: a
   * name, `*.suffix`, an IP or CIDR range, `*`; each with an optional `:port`);
   * the first match wins. IP ranges apply to resolved addresses too [none].
   */
  hostRules?: readonly string[];
  /** What a destination no rule matches gets [`allow`]. */
  hostDefault?: "allow" | "deny";
  /**
   * Let a proxy listening beyond loopback reach loopback, private, link-local
   * (cloud metadata) and other special addresses [false: refused, 403].
   */
  allowPrivate?: boolean;
  /** Start listening beyond loopback without `auth` or `allowClient` (an open proxy) [false: refused]. */
  allowOpen?: boolean;
  /**
   * This instance's tag in the `Via` entries of forwarded requests
   * (`1.1 waypost (tag)`): a request carrying it is a loop (508), while other
   * instances with the same pseudonym can be chained [random per start].
   */
  instanceId?: string;
  /**
   * A parent proxy, `http://[user:pass@]host:port`: plain requests go to it in
   * absolute-form over pooled connections, CONNECT through its CONNECT; our own
   * credentials for it are added by us [none: direct].
   */
  upstreamProxy?: string;
  /** Destinations that skip the parent (NO_PROXY conventions: names, `.suffix`, `*`, CIDRs, `:port`) [none]. */
  noProxy?: string;
  /**
   * A second port on the same address that serves only the proxy's own pages
   * (`/healthz`, `/metrics`, `/`, ...), never the PROXY protocol: for probes
   * that do not come through the load balancer; 0 = none [0].
   */
  adminPort?: number;
}

/** Options with every default filled in. */
export type ResolvedOptions = Required<Omit<ProxyOptions, "signal" | "logger" | "onTunnelEnd" | "hooks">> & {
  signal?: AbortSignal;
  logger?: Logger;
  onTunnelEnd?: (stats: TunnelStats) => void;
  hooks?: ProxyHooks | readonly ProxyHooks[];
};

/** The defaults, as documented on {@link ProxyOptions}. */
export const DEFAULTS: Readonly<Omit<ResolvedOptions, "signal" | "logger" | "onTunnelEnd" | "hooks">> = Object
  .freeze({
    hostname: "127.0.0.1",
    port: 3128,
    via: "waypost",
    connectTimeoutMs: 10_000,
    responseTimeoutMs: 60_000,
    headerTimeoutMs: 30_000,
    idleTimeoutMs: 60_000,
    bodyTimeoutMs: 120_000,
    maxConnections: 4096,
    maxConnectionsPerClient: 256,
    maxRequestLineBytes: 8192,
    maxHeadBytes: 65536,
    maxFields: 1000,
    connectPorts: Object.freeze([443]),
    tunnelIdleTimeoutMs: 0,
    maxIdlePerOrigin: 256,
    upstreamIdleTimeoutMs: 30_000,
    reusePort: false,
    hookTimeoutMs: 30_000,
    proxyStatusDetails: false,
    adminAllow: Object.freeze(["127.0.0.0/8", "::1"]),
    metrics: true,
    timingHeader: false,
    memoryRelease: true,
    drainDelayMs: 0,
    proxyProtocol: false,
    trustedProxies: Object.freeze([]) as readonly string[],
    proxyProtocolTimeoutMs: 5000,
    auth: Object.freeze([]) as readonly string[],
    authRealm: "waypost",
    allowClient: Object.freeze([]) as readonly string[],
    hostRules: Object.freeze([]) as readonly string[],
    hostDefault: "allow" as "allow" | "deny",
    allowPrivate: false,
    allowOpen: false,
    instanceId: "",
    upstreamProxy: "",
    noProxy: "",
    adminPort: 0,
  });

/** The longest timer the runtime can set (2^31 - 1 ms, about 24.8 days); longer ones would fire at once. */
export const MAX_TIMEOUT_MS = 2_147_483_647;

/** Options holding durations in ms: 0 (off) up to {@link MAX_TIMEOUT_MS}. */
const DURATION_OPTIONS = [
  "connectTimeoutMs",
  "responseTimeoutMs",
  "headerTimeoutMs",
  "idleTimeoutMs",
  "bodyTimeoutMs",
  "tunnelIdleTimeoutMs",
  "upstreamIdleTimeoutMs",
  "hookTimeoutMs",
  "drainDelayMs",
  "proxyProtocolTimeoutMs",
] as const;
/** Options holding counts or sizes that must be at least 1. */
const POSITIVE_OPTIONS = [
  "maxConnections",
  "maxConnectionsPerClient",
  "maxRequestLineBytes",
  "maxHeadBytes",
  "maxFields",
] as const;

/**
 * Fills in defaults and validates every value in one place: types, integer
 * ranges (timeouts 0, meaning off, to {@link MAX_TIMEOUT_MS}; counts from 1;
 * ports 0-65535), the `via` token, the CONNECT port list.
 *
 * @throws {TypeError} naming the option and what it accepts.
 */
export function resolveOptions(options: ProxyOptions = {}): ResolvedOptions {
  const out = { ...DEFAULTS } as ResolvedOptions;
  for (const [key, value] of Object.entries(options)) {
    if (value !== undefined) (out as unknown as Record<string, unknown>)[key] = value;
  }
  if (out.instanceId === "") out.instanceId = newInstanceId();
  if (typeof out.instanceId !== "string" || !/^[A-Za-z0-9._-]{1,64}$/.test(out.instanceId)) {
    throw new TypeError("Invalid option instanceId: letters, digits, . _ - (at most 64)");
  }
  for (const key of DURATION_OPTIONS) checkInteger(key, out[key], 0, MAX_TIMEOUT_MS, "ms (0 = off)");
  for (const key of POSITIVE_OPTIONS) checkInteger(key, out[key], 1, Number.MAX_SAFE_INTEGER, "");
  checkInteger("maxIdlePerOrigin", out.maxIdlePerOrigin, 0, Number.MAX_SAFE_INTEGER, "");
  checkInteger("port", out.port, 0, 65535, "(0 picks a free port)");
  checkInteger("adminPort", out.adminPort, 0, 65535, "(0: none)");
  if (out.adminPort !== 0 && out.adminPort === out.port) {
    throw new TypeError("Invalid option adminPort: it must differ from port");
  }
  if (typeof out.hostname !== "string" || out.hostname === "") {
    throw new TypeError("Invalid option hostname: expected an address such as 127.0.0.1 or ::1");
  }
  if (typeof out.via !== "string" || !/^[!#$%&'*+\-.^_`|~0-9A-Za-z:]+$/.test(out.via)) {
    throw new TypeError("Invalid option via: must be a token (letters, digits, -._~ ...)");
  }
  const ports = out.connectPorts;
  if (ports !== "*") {
    if (!Array.isArray(ports)) throw new TypeError('Invalid option connectPorts: expected a list of ports or "*"');
    for (const p of ports) checkInteger("connectPorts", p, 1, 65535, "");
  }
  const switches = [
    "proxyStatusDetails",
    "metrics",
    "timingHeader",
    "memoryRelease",
    "reusePort",
    "proxyProtocol",
    "allowPrivate",
    "allowOpen",
  ] as const;
  for (const key of switches) {
    if (typeof out[key] !== "boolean") throw new TypeError(`Invalid option ${key}: expected true or false`);
  }
  for (const key of ["adminAllow", "trustedProxies", "allowClient"] as const) {
    if (!Array.isArray(out[key])) throw new TypeError(`Invalid option ${key}: expected a list of CIDR ranges`);
    for (const range of out[key]) {
      try {
        parseCidr(String(range));
      } catch (error) {
        throw new TypeError(`Invalid option ${key}: ${(error as Error).message}`);
      }
    }
  }
  if (!Array.isArray(out.hostRules)) throw new TypeError("Invalid option hostRules: expected a list of rules");
  for (const rule of out.hostRules) {
    try {
      parseHostRule(String(rule));
    } catch (error) {
      throw new TypeError(`Invalid option hostRules: ${(error as Error).message}`);
    }
  }
  if (out.hostDefault !== "allow" && out.hostDefault !== "deny") {
    throw new TypeError('Invalid option hostDefault: expected "allow" or "deny"');
  }
  if (!Array.isArray(out.auth)) throw new TypeError("Invalid option auth: expected a list of user:password");
  out.auth.forEach((entry, i) => parseCredential(String(entry), `Invalid option auth (entry ${i + 1})`));
  if (typeof out.authRealm !== "string" || hasControl(out.authRealm) || /["\\]/.test(out.authRealm)) {
    throw new TypeError("Invalid option authRealm: printable text without quotes");
  }
  if (typeof out.upstreamProxy !== "string") throw new TypeError("Invalid option upstreamProxy: expected a URL");
  if (out.upstreamProxy !== "") parseParentProxy(out.upstreamProxy);
  if (typeof out.noProxy !== "string") throw new TypeError("Invalid option noProxy: expected a list");
  parseNoProxy(out.noProxy);
  if (out.proxyProtocol && out.trustedProxies.length === 0) {
    throw new TypeError(
      "Invalid option proxyProtocol: name the load balancers in trustedProxies (--trusted-proxies CIDR)",
    );
  }
  if (out.logger !== undefined && typeof out.logger?.log !== "function") {
    throw new TypeError("Invalid option logger: expected an object with a log() method");
  }
  if (out.onTunnelEnd !== undefined && typeof out.onTunnelEnd !== "function") {
    throw new TypeError("Invalid option onTunnelEnd: expected a function");
  }
  return out;
}

function checkInteger(key: string, value: unknown, min: number, max: number, unit: string): void {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new TypeError(`Invalid option ${key}: expected an integer from ${min} to ${max}${unit ? ` ${unit}` : ""}`);
  }
}

const DURATION = /^([0-9]{1,9})(ms|s|m|h)?$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Parses a duration such as `500ms`, `10s`, `2m` or `1h` (a bare number means
 * seconds). Returns milliseconds, or NaN when the text is not a duration.
 */
export function parseDuration(text: string): number {
  const m = DURATION.exec(text.trim());
  if (m === null) return NaN;
  let n = 0;
  for (const c of m[1]) n = n * 10 + (c.charCodeAt(0) - 48);
  return n * UNIT_MS[m[2] ?? "s"];
}

/** A fresh instance tag for `instanceId`: 8 random hex digits. */
export function newInstanceId(): string {
  const b = crypto.getRandomValues(new Uint8Array(4));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
