/**
 * Building blocks for forwarding through a parent (upstream) proxy,
 * `--upstream-proxy http://[user:pass@]host:port`: the parent's URL, the
 * `NO_PROXY` bypass list, the CONNECT handshake with the parent on a
 * connection already open to it, and the absolute-form request-target a plain
 * request is sent to the parent with (RFC 9112 §3.2.2).
 *
 * Everything here is pure except {@link openParentTunnel}, which only writes to
 * and reads from the connection it is given (it never dials).
 *
 * @module
 */
import { encodeLatin1 } from "./ascii.ts";
import { type Cidr, inCidr, parseCidr, parseIp, parseIPv6 } from "./cidr.ts";
import { closeQuietly } from "./conn.ts";
import { PrematureEofError, ProxyError, UpstreamError, UpstreamTimeoutError } from "./errors.ts";
import { connectionTokens, type Field, stripHopByHop } from "./fields.ts";
import { type Framing, responseFraming } from "./framing.ts";
import { DEFAULT_HEAD_LIMITS, type HeadLimits, HeadParser, type ResponseHead } from "./head.ts";
import { bodyReader, type ConnReader } from "./reader.ts";
import { parseAuthority } from "./target.ts";
import { writeAll } from "./writer.ts";

// ---------------------------------------------------------------------------
// The parent's URL

/** A parent proxy, from {@link parseParentProxy}. */
export interface ParentProxy {
  /** Host to dial: lower-cased name or IP address, IPv6 without brackets. */
  readonly hostname: string;
  /** TCP port (80 when the URL has none, as for any `http:` URL). */
  readonly port: number;
  /** `Basic <base64(user:pass)>` for `Proxy-Authorization` (RFC 7617), or null without credentials. */
  readonly authorization: string | null;
  /** `http://host:port`, never with credentials: for logs and the Proxy-Status `next-hop`. */
  readonly display: string;
}

const URL_PARTS = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([\s\S]*)$/;

/**
 * Parses `http://[user[:pass]@]host[:port][/]`. The port defaults to 80, as for
 * every `http:` URL (curl's default for a proxy is 1080, Squid's usual 3128:
 * write the port). Credentials are percent-decoded to bytes (`%40` is `@`;
 * characters written as such are UTF-8) and become a Basic `Proxy-Authorization`
 * (`user:` for a user without password). The userinfo ends at the last `@`.
 * Error messages never repeat the credentials.
 *
 * @throws {TypeError} for another scheme (`https:` is "not supported yet"), a
 *   missing or invalid host or port, a path other than `/`, a query or fragment,
 *   invalid percent-encoding, or a user name holding `:` (Basic cannot carry it).
 */
export function parseParentProxy(url: string): ParentProxy {
  const m = URL_PARTS.exec(url);
  if (m === null) throw new TypeError("upstream proxy: expected a URL like http://host:port");
  const scheme = m[1].toLowerCase();
  if (scheme === "https") throw new TypeError("upstream proxy: https:// parents are not supported yet (use http://)");
  if (scheme !== "http") throw new TypeError(`upstream proxy: unsupported scheme ${scheme}: (only http://)`);
  if (m[3] !== "" && m[3] !== "/") {
    throw new TypeError("upstream proxy: the URL must not have a path, query or fragment (http://host:port)");
  }
  const at = m[2].lastIndexOf("@");
  const authority = at === -1 ? m[2] : m[2].slice(at + 1);
  const userinfo = at === -1 ? null : m[2].slice(0, at);
  if (authority === "" || authority.startsWith(":")) throw new TypeError("upstream proxy: the URL has no host");
  let hostname: string;
  let port: number;
  try {
    ({ hostname, port } = parseAuthority(authority, 80));
  } catch {
    throw new TypeError(`upstream proxy: invalid host or port in ${JSON.stringify(authority)}`);
  }
  const v6 = hostname.includes(":");
  if (v6 && parseIPv6(hostname) === null) {
    throw new TypeError(`upstream proxy: invalid IPv6 address in ${JSON.stringify(authority)}`);
  }
  const display = `http://${v6 ? `[${hostname}]` : hostname}:${port}`;
  return { hostname, port, authorization: basicCredentials(userinfo), display };
}

/** The Basic credentials for a URL's raw userinfo, or null for none. */
function basicCredentials(userinfo: string | null): string | null {
  if (userinfo === null || userinfo === "") return null;
  const colon = userinfo.indexOf(":");
  const user = percentDecode(colon === -1 ? userinfo : userinfo.slice(0, colon), "user name");
  const pass = colon === -1 ? new Uint8Array(0) : percentDecode(userinfo.slice(colon + 1), "password");
  // RFC 7617 §2: the user-id cannot hold a colon (the first one ends it).
  if (user.includes(0x3a)) throw new TypeError("upstream proxy: the user name must not contain ':'");
  const joined = new Uint8Array(user.length + 1 + pass.length);
  joined.set(user);
  joined[user.length] = 0x3a;
  joined.set(pass, user.length + 1);
  let binary = "";
  for (let i = 0; i < joined.length; i++) binary += String.fromCharCode(joined[i]);
  return `Basic ${btoa(binary)}`;
}

const UTF8 = new TextEncoder();

/** Percent-decodes to bytes (`%XX` is one byte; other characters are UTF-8). */
function percentDecode(text: string, what: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x25) {
      const hex = text.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) throw new TypeError(`upstream proxy: invalid percent-encoding in the ${what}`);
      out.push(parseInt(hex, 16));
      i += 2;
    } else if (c <= 0x20 || c === 0x7f) {
      throw new TypeError(`upstream proxy: the ${what} holds a space or control character (percent-encode it)`);
    } else if (c < 0x80) {
      out.push(c);
    } else {
      const code = text.codePointAt(i)!;
      if (code > 0xffff) i++;
      for (const b of UTF8.encode(String.fromCodePoint(code))) out.push(b);
    }
  }
  return Uint8Array.from(out);
}

// ---------------------------------------------------------------------------
// NO_PROXY

/** One `NO_PROXY` entry, from {@link parseNoProxy}. */
export type NoProxyRule =
  /** `*`: every destination. */
  | { readonly kind: "all"; readonly port: number | null; readonly text: string }
  /** A name: it and its subdomains (`name` without leading `.`/`*.` or trailing `.`). */
  | { readonly kind: "name"; readonly name: string; readonly port: number | null; readonly text: string }
  /** An IP address (a one-address range) or a CIDR range: IP-literal destinations in it. */
  | { readonly kind: "ip"; readonly range: Cidr; readonly port: number | null; readonly text: string };

const NAME = /^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/;

/**
 * Parses a `NO_PROXY` list the way curl, Go and Python read it: entries
 * separated by commas and/or whitespace, compared without case.
 *
 * - `*` matches every destination.
 * - `example.com` matches `example.com` and every subdomain (`a.example.com`,
 *   never `badexample.com`).
 * - `.example.com` and `*.example.com` are the same rule: like curl and Python
 *   (unlike Go, which skips the bare name), the bare `example.com` matches too.
 * - An IP address matches that address exactly; `10.0.0.0/8` or `fd00::/8` a
 *   range. Both apply to IP-literal destinations only (no name is resolved); an
 *   IPv4-mapped IPv6 destination is the IPv4 address it carries.
 * - IPv6 may be bare (`::1`, `fd00::/8`: no port then) or in brackets
 *   (`[::1]`, `[::1]:8080`, `[fd00::]/8:443`).
 * - `:port` after any entry restricts it to that destination port.
 *
 * Nothing is bypassed implicitly (Go always bypasses localhost and loopback
 * addresses; here only what the list names).
 *
 * @throws {TypeError} naming an entry that is none of these (bad range, port or name).
 */
export function parseNoProxy(list: string): NoProxyRule[] {
  const rules: NoProxyRule[] = [];
  for (const text of list.split(/[\s,]+/)) if (text !== "") rules.push(parseNoProxyEntry(text));
  return rules;
}

function parseNoProxyEntry(text: string): NoProxyRule {
  const entry = text.toLowerCase();
  const bad = (why: string) => new TypeError(`NO_PROXY entry ${JSON.stringify(text)}: ${why}`);
  let host: string;
  let portText: string | null = null;
  if (entry.startsWith("[")) {
    const close = entry.indexOf("]");
    const rest = close === -1 ? null : /^(\/[0-9]+)?(?::(.*))?$/.exec(entry.slice(close + 1));
    if (close === -1 || rest === null) throw bad("expected [IPv6], [IPv6]:port or [IPv6]/prefix");
    host = entry.slice(1, close) + (rest[1] ?? "");
    portText = rest[2] ?? null;
  } else {
    const colon = entry.indexOf(":");
    if (colon === -1 || entry.indexOf(":", colon + 1) !== -1) host = entry; // no port, or bare IPv6
    else {
      host = entry.slice(0, colon);
      portText = entry.slice(colon + 1);
    }
  }
  let port: number | null = null;
  if (portText !== null) {
    port = /^[0-9]{1,5}$/.test(portText) ? Number(portText) : 0;
    if (port < 1 || port > 65535) throw bad("invalid port (1-65535)");
  }
  if (host === "*") return { kind: "all", port, text };
  if (host.includes("/") || parseIp(host) !== null) {
    let range: Cidr;
    try {
      range = parseCidr(host);
    } catch (error) {
      throw bad((error as Error).message);
    }
    return { kind: "ip", range, port, text };
  }
  let name = host;
  if (name.startsWith("*.")) name = name.slice(2);
  else if (name.startsWith(".")) name = name.slice(1);
  if (name.endsWith(".")) name = name.slice(0, -1);
  if (!NAME.test(name)) throw bad("expected a host name, an IP address or range, or *");
  return { kind: "name", name, port, text };
}

/**
 * Whether a request to `hostname:port` goes direct instead of through the
 * parent. `hostname` as the target parsers give it (lower-cased, IPv6 without
 * brackets); brackets, upper case and a trailing dot are accepted too.
 */
export function bypassesParent(rules: readonly NoProxyRule[], hostname: string, port: number): boolean {
  if (rules.length === 0) return false;
  let host = hostname.toLowerCase();
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  if (host.endsWith(".")) host = host.slice(0, -1);
  const ip = parseIp(host);
  for (const rule of rules) {
    if (rule.port !== null && rule.port !== port) continue;
    switch (rule.kind) {
      case "all":
        return true;
      case "ip":
        if (ip !== null && inCidr(ip, rule.range)) return true;
        break;
      case "name":
        if (
          ip === null &&
          host.endsWith(rule.name) &&
          (host.length === rule.name.length || host.charCodeAt(host.length - rule.name.length - 1) === 0x2e)
        ) return true;
        break;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------
// Plain requests

/**
 * The absolute-form request-target (RFC 9112 §3.2.2) a plain request is sent to
 * the parent with. A string (the target as received) is kept byte for byte but
 * for its fragment, which is never part of a request-target; a URL is
 * serialized without fragment and without userinfo (RFC 9110 §4.2.4).
 *
 * @throws {TypeError} when the result would not be an absolute-form target
 *   (no `scheme://`, or a space or control character).
 */
export function parentRequestTarget(url: URL | string): string {
  let target: string;
  if (typeof url === "string") {
    const hash = url.indexOf("#");
    target = hash === -1 ? url : url.slice(0, hash);
  } else {
    const copy = new URL(url.href);
    copy.hash = "";
    copy.username = "";
    copy.password = "";
    target = copy.href;
  }
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:\/\/[\x21-\x7e]*$/.test(target)) {
    throw new TypeError("not an absolute-form request target");
  }
  return target;
}

/** `host:port` as written in a CONNECT target or Host field (IPv6 in brackets). */
export function authorityOf(hostname: string, port: number): string {
  return hostname.includes(":") && !hostname.startsWith("[") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

// ---------------------------------------------------------------------------
// CONNECT through the parent

/** Options for {@link openParentTunnel}. */
export interface ParentTunnelOptions {
  /**
   * Bound on the whole handshake, in ms: sending the CONNECT, the parent's
   * answer head, and a refusal's body. 0 = none (as for the connect timeout).
   */
  timeoutMs: number;
  /** Most body bytes of a refusal kept [64 KiB]; the rest is dropped and `truncated` set. */
  maxBodyBytes?: number;
  /** Limits for each response head from the parent [DEFAULT_HEAD_LIMITS]. */
  headLimits?: HeadLimits;
  /** Our `Via` entry for the CONNECT (RFC 9110 §7.6.3) [none]. */
  via?: string;
}

/** The parent's refusal of a CONNECT, to relay to the client. */
export interface ParentRefusal {
  /** False: no tunnel; the rest is the parent's answer. */
  readonly ok: false;
  /** The parent's status (never 1xx or 2xx). */
  readonly status: number;
  /** The parent's reason phrase, as received. */
  readonly reason: string;
  /**
   * End-to-end fields, as received: without hop-by-hop fields, those named by
   * `Connection`, `Content-Length` and `Transfer-Encoding` (the body below is
   * decoded; the caller frames it), but with `Proxy-Authenticate` (a 407 names
   * the parent's scheme; whether to pass it on is the caller's choice).
   */
  readonly fields: Field[];
  /** The body, decoded from its framing (at most `maxBodyBytes`). */
  readonly body: Uint8Array;
  /**
   * True when `body` is only a prefix: longer than `maxBodyBytes`, cut short
   * (close, reset, invalid chunking, the deadline), or in a transfer coding
   * other than chunked (the body is then left out).
   */
  readonly truncated: boolean;
}

/** What {@link openParentTunnel} got: a tunnel, or the parent's refusal. */
export type ParentTunnelResult = { readonly ok: true } | ParentRefusal;

/** Interim (1xx) responses skipped at most, and their bytes (as for origins); more is 502. */
const MAX_INTERIM_RESPONSES = 32;
const MAX_INTERIM_BYTES = 64 * 1024;
/** Default bound on a refusal's body. */
export const MAX_REFUSAL_BODY_BYTES = 64 * 1024;
const PARENT_CHUNKED = Object.freeze({ maxChunkLineBytes: 4096, trailer: DEFAULT_HEAD_LIMITS, fromOrigin: true });
/** Proxy-Authenticate is hop-by-hop, but a 407 from the parent is meaningless without it. */
const KEEP_ON_REFUSAL: ReadonlySet<string> = new Set(["proxy-authenticate"]);
const HTTP_SLASH = encodeLatin1("HTTP/");
// authority-form: host ":" port (RFC 9112 §3.2.3), IPv6 in brackets.
const CONNECT_AUTHORITY = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+):[0-9]{1,5}$/;
const OK: ParentTunnelResult = Object.freeze({ ok: true });

/**
 * RFC 9209 error types for the codes {@link openParentTunnel} throws, to merge
 * into proxy_status.ts (a `parent-bad-response` caused by a `head-too-large`
 * is `http_response_header_section_size`, as for origins).
 */
export const PARENT_ERROR_TYPES: Readonly<Record<string, string>> = Object.freeze({
  "parent-closed": "connection_terminated",
  "parent-reset": "connection_terminated",
  "parent-write-failed": "connection_terminated",
  "parent-truncated-head": "http_response_incomplete",
  "parent-bad-response": "http_protocol_error",
  "parent-too-many-interim": "http_protocol_error",
  "parent-timeout": "http_response_timeout",
});

/** The CONNECT request sent to the parent for `authority`. */
export function parentConnectRequest(parent: ParentProxy, authority: string, via?: string): Uint8Array {
  if (!CONNECT_AUTHORITY.test(authority)) throw new TypeError(`not an authority-form target: ${authority}`);
  const auth = parent.authorization === null ? "" : `Proxy-Authorization: ${parent.authorization}\r\n`;
  // RFC 9110 §7.6.3: a forwarded message carries Via (and a loop through parents is then caught).
  const viaLine = via === undefined ? "" : `Via: ${via}\r\n`;
  return encodeLatin1(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${viaLine}${auth}\r\n`);
}

/**
 * Asks the parent, on `conn` (already connected to it, read through
 * `reader`), to open a tunnel to `authority` (`host:port`, IPv6 in
 * brackets). Interim (1xx) answers are skipped. On a 2xx the tunnel is open:
 * any framing fields are ignored (RFC 9110 §9.3.6) and bytes the parent sent
 * after the head stay in `reader`, to be relayed first. Any other status is
 * returned as a {@link ParentRefusal} and `conn` is closed.
 *
 * No read is left in flight when this settles (the deadline closes `conn`,
 * which ends a pending read, and that read is awaited).
 *
 * @throws {UpstreamError} 502, `conn` closed: `parent-closed` (closed before
 *   answering), `parent-truncated-head`, `parent-reset`, `parent-write-failed`,
 *   `parent-bad-response` (not HTTP/1.x, invalid head or framing, an unasked-for
 *   101), `parent-too-many-interim`.
 * @throws {UpstreamTimeoutError} 504 `parent-timeout`, `conn` closed: no
 *   complete answer head within `timeoutMs`.
 * @throws {TypeError} when `authority` is not authority-form (nothing is sent).
 */
export async function openParentTunnel(
  conn: Deno.Conn,
  reader: ConnReader,
  parent: ParentProxy,
  authority: string,
  options: ParentTunnelOptions,
): Promise<ParentTunnelResult> {
  const request = parentConnectRequest(parent, authority, options.via);
  let timedOut = false;
  const timer = options.timeoutMs > 0
    ? setTimeout(() => {
      timedOut = true;
      closeQuietly(conn); // ends a pending read or write: it rejects, and is awaited below
    }, options.timeoutMs)
    : undefined;
  const expired = () => timedOut;
  try {
    try {
      await writeAll(conn, request);
    } catch (error) {
      if (timedOut) throw timeout();
      throw new UpstreamError("Cannot send the CONNECT to the parent proxy", "parent-write-failed", error);
    }
    const res = await readFinalHead(reader, options.headLimits ?? DEFAULT_HEAD_LIMITS, expired);
    if (timedOut) throw timeout(); // the deadline closed the connection as the head completed
    if (res.status < 300) return OK;
    const refusal = await readRefusal(reader, res, options.maxBodyBytes ?? MAX_REFUSAL_BODY_BYTES);
    closeQuietly(conn);
    return refusal;
  } catch (error) {
    closeQuietly(conn);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

function timeout(): UpstreamTimeoutError {
  return new UpstreamTimeoutError("Timed out waiting for the parent proxy's answer to CONNECT", "parent-timeout");
}

/** Reads response heads until a final one (1xx skipped, bounded). */
async function readFinalHead(reader: ConnReader, limits: HeadLimits, expired: () => boolean): Promise<ResponseHead> {
  let interim = 0;
  let interimBytes = 0;
  while (true) {
    const parser = new HeadParser("response", limits);
    let got: boolean;
    try {
      got = await looksLikeHttp(reader) && await reader.readHead(parser);
    } catch (error) {
      throw headFailure(error, parser, expired());
    }
    if (!got) {
      if (expired()) throw timeout();
      throw new UpstreamError("The parent proxy closed the connection without answering the CONNECT", "parent-closed");
    }
    const res = parser.responseHead();
    if (res.status >= 200) return res;
    if (res.status === 101) {
      throw new UpstreamError("The parent proxy switched protocols without being asked", "parent-bad-response");
    }
    if (++interim > MAX_INTERIM_RESPONSES || (interimBytes += parser.bytesConsumed) > MAX_INTERIM_BYTES) {
      throw new UpstreamError("The parent proxy sent too many interim responses", "parent-too-many-interim");
    }
  }
}

/**
 * Waits for the first byte of a head and checks that what is there starts like
 * `HTTP/` (a TLS or SSH server, or anything else, fails at once instead of at
 * the deadline). False at EOF before any byte.
 */
async function looksLikeHttp(reader: ConnReader): Promise<boolean> {
  if (reader.buffered === 0) {
    const chunk = await reader.next();
    if (chunk === null) return false;
    reader.unread(chunk.length);
  }
  const start = reader.peek();
  for (let i = 0; i < start.length && i < HTTP_SLASH.length; i++) {
    if (start[i] !== HTTP_SLASH[i]) {
      throw new UpstreamError("The parent proxy did not answer in HTTP/1.x", "parent-bad-response");
    }
  }
  return true;
}

function headFailure(error: unknown, parser: HeadParser, timedOut: boolean): ProxyError {
  if (timedOut) return timeout();
  if (error instanceof UpstreamError) return error;
  if (error instanceof PrematureEofError) {
    return new UpstreamError("The parent proxy closed the connection mid-head", "parent-truncated-head", error);
  }
  if (error instanceof ProxyError) {
    return new UpstreamError("The parent proxy sent an invalid response head", "parent-bad-response", error);
  }
  return new UpstreamError(
    parser.started ? "The parent proxy reset the connection mid-head" : "The parent proxy reset the connection",
    "parent-reset",
    error,
  );
}

/** Reads a refusal's body (bounded; any failure after the head only truncates it). */
async function readRefusal(reader: ConnReader, res: ResponseHead, maxBytes: number): Promise<ParentRefusal> {
  let framing: Framing;
  try {
    framing = responseFraming(res, "CONNECT");
  } catch (error) {
    throw new UpstreamError("The parent proxy's answer has invalid framing", "parent-bad-response", error);
  }
  const fields = stripHopByHop(res.fields, connectionTokens(res.fields), KEEP_ON_REFUSAL);
  const refusal = { ok: false as const, status: res.status, reason: res.reason, fields };
  // A body still in another transfer coding could not be relayed without it: left out.
  if (framing.kind !== "none" && framing.kind !== "length" && framing.codings.length > 0) {
    return { ...refusal, body: new Uint8Array(0), truncated: true };
  }
  const body = bodyReader(reader, framing, PARENT_CHUNKED);
  const parts: Uint8Array[] = [];
  let size = 0;
  let truncated = false;
  try {
    while (true) {
      const data = await body.next();
      if (data === null) break;
      if (data.length > maxBytes - size) {
        parts.push(data.slice(0, maxBytes - size));
        size = maxBytes;
        truncated = true;
        break;
      }
      parts.push(data.slice()); // a view into the reader's buffer: copied before the next read
      size += data.length;
    }
  } catch {
    truncated = true; // cut short, invalid chunking or the deadline: the status still holds
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return { ...refusal, body: out, truncated };
}
