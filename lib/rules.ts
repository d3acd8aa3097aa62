/**
 * Where requests may go: ordered destination rules (`allow`/`deny` a name,
 * `*.suffix`, an IP range, each with an optional port; first match wins), the
 * default-deny of private and special addresses for a proxy reachable beyond
 * loopback, and the verdict on an address actually dialled. Pure: resolving
 * names is the caller's (it must connect to the address it checked).
 *
 * @module
 */
import { type Cidr, inCidr, type IpBytes, parseCidr, parseIp } from "./cidr.ts";

/** One destination rule. */
export interface HostRule {
  readonly action: "allow" | "deny";
  /** `name` (exact), `suffix` (`*.example.test`: the name and its subdomains), `cidr`, or `any` (`*`). */
  readonly kind: "name" | "suffix" | "cidr" | "any";
  /** Lower-case name or suffix (without `*.`). */
  readonly name: string;
  readonly cidr: Cidr | null;
  /** The port it is limited to, or 0 for any. */
  readonly port: number;
  /** As written (`deny *.ads.test:443`), for answers and logs. */
  readonly text: string;
}

const NAME = /^(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/;

/**
 * Parses `allow PATTERN` or `deny PATTERN`. PATTERN: `*`, `name`,
 * `*.suffix`, an IP address or CIDR range (IPv6 in brackets when a port
 * follows), then an optional `:port`.
 *
 * @throws {TypeError} naming the rule and what is wrong.
 */
export function parseHostRule(text: string): HostRule {
  const m = /^\s*(allow|deny)\s+(\S+)\s*$/i.exec(text);
  if (m === null) {
    throw new TypeError(`invalid rule ${JSON.stringify(text)}: expected "allow PATTERN" or "deny PATTERN"`);
  }
  const action = m[1].toLowerCase() as "allow" | "deny";
  let pattern = m[2];
  let port = 0;
  const bad = (why: string): never => {
    throw new TypeError(`invalid rule ${JSON.stringify(text)}: ${why}`);
  };
  // A port follows the last colon, unless the pattern is a bare IPv6 address (several colons, no brackets).
  const bracketed = pattern.startsWith("[");
  const colons = pattern.split(":").length - 1;
  if (bracketed ? /\]:[0-9]+$/.test(pattern) : colons === 1) {
    const at = pattern.lastIndexOf(":");
    const p = pattern.slice(at + 1);
    if (!/^[0-9]{1,5}$/.test(p) || Number(p) < 1 || Number(p) > 65535) bad("the port must be 1-65535");
    port = Number(p);
    pattern = pattern.slice(0, at);
  }
  if (bracketed) {
    const close = pattern.indexOf("]");
    if (close === -1) bad("unclosed [");
    pattern = pattern.slice(1, close) + pattern.slice(close + 1);
  }
  const base = { action, port, text: `${action} ${m[2]}` };
  if (pattern === "*") return { ...base, kind: "any", name: "", cidr: null };
  if (/^[0-9.]+(\/[0-9]+)?$/.test(pattern) || pattern.includes(":")) {
    try {
      return { ...base, kind: "cidr", name: "", cidr: parseCidr(pattern) };
    } catch (error) {
      return bad((error as Error).message);
    }
  }
  const lower = pattern.toLowerCase();
  if (lower.startsWith("*.")) {
    if (!NAME.test(lower.slice(2))) bad("not a host name suffix");
    return { ...base, kind: "suffix", name: lower.slice(2).replace(/\.$/, ""), cidr: null };
  }
  if (!NAME.test(lower)) bad("not a host name, *.suffix or IP range");
  return { ...base, kind: "name", name: lower.replace(/\.$/, ""), cidr: null };
}

/** Whether a rule matches a destination: its name (lower-case, as requested) and, when known, an address. */
function matches(rule: HostRule, name: string, port: number, address: IpBytes | null): boolean {
  if (rule.port !== 0 && rule.port !== port) return false;
  switch (rule.kind) {
    case "any":
      return true;
    case "name":
      return name === rule.name;
    case "suffix":
      return name === rule.name || name.endsWith(`.${rule.name}`);
    case "cidr":
      return address !== null && inCidr(address, rule.cidr!);
  }
}

/** The verdict on one destination. */
export interface Verdict {
  readonly allowed: boolean;
  /** What decided it: a rule's text, `private address` or `default`. */
  readonly why: string;
  /** The RFC 9209 error type when refused. */
  readonly type: "http_request_denied" | "destination_ip_prohibited";
}

const ALLOWED: Verdict = Object.freeze({ allowed: true, why: "default", type: "http_request_denied" });

/** The destination policy: ordered rules, then (optionally) private addresses refused, then the default. */
export interface DestinationPolicy {
  readonly rules: readonly HostRule[];
  /** Refuse loopback, private, link-local, unspecified, multicast and reserved addresses not allowed by a rule. */
  readonly blockPrivate: boolean;
  /** When nothing matched. */
  readonly defaultAllow: boolean;
}

/** Whether the policy allows everything (then no check and no lookup is made). */
export function isOpenPolicy(p: DestinationPolicy): boolean {
  return p.rules.length === 0 && !p.blockPrivate && p.defaultAllow;
}

/** Whether verdicts need the destination's addresses (an IP rule, or the private block). */
export function needsAddresses(p: DestinationPolicy): boolean {
  return p.blockPrivate || p.rules.some((r) => r.kind === "cidr");
}

/**
 * The verdict for `host:port` reached at `address` (the address dialled or
 * about to be; null when not known yet: then only name rules can match, and a
 * name that matches no rule is decided when the address is known).
 */
export function destinationVerdict(
  p: DestinationPolicy,
  host: string,
  port: number,
  address: IpBytes | null,
): Verdict | null {
  const name = host.toLowerCase().replace(/^\[|\]$/g, "").replace(/\.$/, "");
  const literal = parseIp(name);
  const addr = address ?? literal;
  for (const rule of p.rules) {
    if (rule.kind === "cidr" && addr === null) continue; // decided once the address is known
    if (matches(rule, name, port, addr)) {
      return rule.action === "allow" ? { allowed: true, why: rule.text, type: "http_request_denied" } : {
        allowed: false,
        why: rule.text,
        type: rule.kind === "cidr" ? "destination_ip_prohibited" : "http_request_denied",
      };
    }
  }
  if (addr === null && needsAddresses(p)) return null;
  if (p.blockPrivate && addr !== null && isSpecialAddress(addr)) {
    return { allowed: false, why: "private address", type: "destination_ip_prohibited" };
  }
  return p.defaultAllow ? ALLOWED : { allowed: false, why: "default", type: "http_request_denied" };
}

const SPECIAL_V4: readonly Cidr[] = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16", // link-local, including 169.254.169.254 (cloud metadata)
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.168.0.0/16",
  "198.18.0.0/15",
  "224.0.0.0/4",
  "240.0.0.0/4",
].map(parseCidr);

const SPECIAL_V6: readonly Cidr[] = [
  "::/128",
  "::1/128",
  "64:ff9b::/96", // NAT64: may reach private IPv4 space
  "fc00::/7",
  "fe80::/10",
  "fec0::/10",
  "ff00::/8",
  "fd00:ec2::254/128", // AWS metadata over IPv6 (inside fc00::/7 too)
].map(parseCidr);

/**
 * Whether an address is loopback, private, link-local (cloud metadata),
 * unspecified, shared (CGNAT), multicast or reserved. IPv4-mapped and
 * IPv4-compatible IPv6 addresses arrive here as their IPv4 address (parseIp).
 */
export function isSpecialAddress(address: IpBytes): boolean {
  const list = address.length === 4 ? SPECIAL_V4 : SPECIAL_V6;
  for (const range of list) if (inCidr(address, range)) return true;
  return false;
}

/** Whether a listening address reaches beyond this machine (not loopback). */
export function listensBeyondLoopback(hostname: string): boolean {
  if (hostname.toLowerCase() === "localhost") return false;
  const a = parseIp(hostname);
  if (a === null) return true; // a name: it may resolve to anything
  return !(a.length === 4 ? a[0] === 127 : a.every((b, i) => b === (i === 15 ? 1 : 0)));
}
