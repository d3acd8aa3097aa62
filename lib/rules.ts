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
 * The IP address a host names, as the system resolver would read it: an IPv4
 * or IPv6 literal, or one of the numeric IPv4 forms `inet_aton` accepts
 * (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`), which `Deno.connect` dials
 * as that address. Null for a name.
 */
export function hostAddress(host: string): IpBytes | null {
  const name = host.replace(/^\[|\]$/g, "").replace(/\.$/, "");
  return parseIp(name) ?? inetAton(name);
}

/** inet_aton's forms: 1 to 4 parts, each decimal, octal (leading 0) or hex (0x); the last fills the rest. */
function inetAton(text: string): IpBytes | null {
  if (!/^[0-9a-fx.]+$/i.test(text)) return null;
  const parts = text.split(".");
  if (parts.length > 4 || parts.some((p) => p === "")) return null;
  const values: number[] = [];
  for (const p of parts) {
    const v = /^0x[0-9a-f]+$/i.test(p)
      ? parseInt(p.slice(2), 16)
      : /^0[0-7]*$/.test(p)
      ? parseInt(p, 8)
      : /^[1-9][0-9]*$/.test(p)
      ? Number(p)
      : NaN;
    if (!Number.isFinite(v)) return null;
    values.push(v);
  }
  const last = values.pop()!;
  if (values.some((v) => v > 255) || last >= 2 ** (8 * (4 - values.length))) return null;
  const out = new Uint8Array(4);
  values.forEach((v, i) => out[i] = v);
  for (let i = 3, rest = last; i >= values.length; i--, rest = Math.floor(rest / 256)) out[i] = rest % 256;
  return out;
}

/**
 * The verdict for `host:port` reached at `address` (the address dialled or
 * about to be; for an IP literal its own address is used). Rules are tried in
 * order, the first match wins: a name rule by the requested name, an IP rule
 * by the address. With `address` null for a name (not resolved: a parent
 * proxy resolves it), IP rules cannot match and are skipped.
 *
 * The private-address block wins over every allow except an IP rule that
 * covers the address: `allow *` or `allow *.example.com` never opens
 * loopback or metadata addresses a name happens to resolve to.
 */
export function destinationVerdict(
  p: DestinationPolicy,
  host: string,
  port: number,
  address: IpBytes | null,
): Verdict {
  const name = host.toLowerCase().replace(/^\[|\]$/g, "").replace(/\.$/, "");
  const addr = address ?? hostAddress(name);
  const special = p.blockPrivate && addr !== null && isSpecialAddress(addr);
  for (const rule of p.rules) {
    if (!matches(rule, name, port, addr)) continue;
    if (rule.action === "deny") {
      return {
        allowed: false,
        why: rule.text,
        type: rule.kind === "cidr" ? "destination_ip_prohibited" : "http_request_denied",
      };
    }
    if (special && rule.kind !== "cidr") continue; // only an IP rule opens a private address
    return { allowed: true, why: rule.text, type: "http_request_denied" };
  }
  if (special) return { allowed: false, why: "private address", type: "destination_ip_prohibited" };
  return p.defaultAllow ? ALLOWED : { allowed: false, why: "default", type: "http_request_denied" };
}

/**
 * The verdict a name gets before its addresses are known, when no address
 * could change it: then the name is never looked up (a refused name causes no
 * DNS query, and 403 tells nothing about whether it exists). Null when only
 * the addresses can tell.
 */
export function verdictBeforeLookup(p: DestinationPolicy, host: string, port: number): Verdict | null {
  const name = host.toLowerCase().replace(/\.$/, "");
  let ipAllowBefore = false;
  let ipDenyBefore = false;
  for (const rule of p.rules) {
    if (rule.port !== 0 && rule.port !== port) continue;
    if (rule.kind === "cidr") {
      if (rule.action === "allow") ipAllowBefore = true;
      else ipDenyBefore = true;
      continue;
    }
    if (!matches(rule, name, port, null)) continue;
    if (rule.action === "deny") {
      // Only an earlier IP allow matching the address could come first.
      return ipAllowBefore ? null : { allowed: false, why: rule.text, type: "http_request_denied" };
    }
    // An allow by name: an earlier IP deny, or the private block, still needs the address.
    return ipDenyBefore || p.blockPrivate ? null : { allowed: true, why: rule.text, type: "http_request_denied" };
  }
  // No name rule matched: the IP rules and the default decide.
  if (!p.defaultAllow && !ipAllowBefore) return { allowed: false, why: "default", type: "http_request_denied" };
  if (p.defaultAllow && !ipDenyBefore && !p.blockPrivate) return ALLOWED;
  return null;
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
