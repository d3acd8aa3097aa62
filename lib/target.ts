/**
 * Request-target forms (RFC 9112 §3.2) and the absolute-form URI a forward
 * proxy receives (RFC 9110 §4.2.1). Pure: no I/O.
 *
 * @module
 */
import { parseDecimal } from "./ascii.ts";
import { ParseError } from "./errors.ts";

/** Where an absolute-form request goes and what the origin is sent. */
export interface AbsoluteTarget {
  /** Host to connect to: lower-cased reg-name or IP, IPv6 without brackets. */
  hostname: string;
  /** TCP port (default 80). */
  port: number;
  /** The authority for the `Host` field, as received (userinfo never allowed). */
  authority: string;
  /** The origin-form (or `*`) request-target sent to the origin. */
  path: string;
}

const SCHEME_END = /^[A-Za-z][A-Za-z0-9+.-]*:/;
// reg-name / IPv4address: unreserved / sub-delims (pct-encoded refused: we cannot resolve it).
const REG_NAME = /^[A-Za-z0-9\-._~!$&'()*+,;=]+$/;
const IPV6 = /^[0-9A-Fa-f:.]+$/;

/**
 * Parses an absolute-form `http://host[:port][/path][?query]` target.
 * An empty path becomes `/`, or `*` for OPTIONS (RFC 9112 §3.2.4). A fragment
 * is not part of a request-target and is dropped.
 *
 * @throws {ParseError} `unsupported-scheme`, `userinfo-in-target` or `invalid-target`.
 */
export function parseAbsoluteTarget(target: string, method: string): AbsoluteTarget {
  // The usual lower-case "http:" needs no regular expression.
  if (!target.startsWith("http:")) {
    const scheme = SCHEME_END.exec(target);
    if (scheme === null) throw new ParseError("Cannot parse request target", "invalid-target");
    if (scheme[0].toLowerCase() !== "http:") {
      throw new ParseError(
        "Unsupported URI scheme: this proxy forwards http:// (use CONNECT for https)",
        "unsupported-scheme",
      );
    }
  }
  if (!target.startsWith("//", 5)) {
    throw new ParseError("Cannot parse request target: missing authority", "invalid-target");
  }
  let end = target.length;
  const hash = target.indexOf("#", 7);
  if (hash !== -1) end = hash;
  let authorityEnd = end;
  for (let i = 7; i < end; i++) {
    const c = target.charCodeAt(i);
    if (c === 0x2f || c === 0x3f) {
      authorityEnd = i;
      break;
    }
  }
  const authority = target.slice(7, authorityEnd);
  const rest = target.slice(authorityEnd, end);
  // RFC 9110 §4.2.4: userinfo is deprecated in http URIs; treat it as an error.
  if (authority.includes("@")) {
    throw new ParseError("Cannot accept userinfo in the request target", "userinfo-in-target");
  }
  const { hostname, port } = parseAuthority(authority, 80);
  let path = rest;
  if (rest === "") path = method === "OPTIONS" ? "*" : "/";
  else if (rest.charCodeAt(0) === 0x3f) path = `/${rest}`;
  return { hostname, port, authority, path };
}

/**
 * Parses `host[:port]` (authority without userinfo; IPv6 in brackets).
 *
 * @throws {ParseError} `invalid-target` when the host or port is not valid.
 */
export function parseAuthority(authority: string, defaultPort: number): { hostname: string; port: number } {
  let host: string;
  let portText: string | null = null;
  if (authority.startsWith("[")) {
    const close = authority.indexOf("]");
    if (close === -1) throw new ParseError("Cannot parse request target: invalid IPv6 literal", "invalid-target");
    host = authority.slice(1, close);
    if (!IPV6.test(host) || !host.includes(":")) {
      throw new ParseError("Cannot parse request target: invalid IPv6 literal", "invalid-target");
    }
    const after = authority.slice(close + 1);
    if (after !== "") {
      if (!after.startsWith(":")) {
        throw new ParseError("Cannot parse request target: invalid authority", "invalid-target");
      }
      portText = after.slice(1);
    }
  } else {
    const colon = authority.lastIndexOf(":");
    host = colon === -1 ? authority : authority.slice(0, colon);
    if (colon !== -1) portText = authority.slice(colon + 1);
    if (!REG_NAME.test(host)) throw new ParseError("Cannot parse request target: invalid host", "invalid-target");
  }
  let port = defaultPort;
  if (portText !== null && portText !== "") {
    port = portText.length > 5 ? -1 : parseDecimal(portText);
    if (port < 1 || port > 65535) {
      throw new ParseError("Cannot parse request target: invalid port", "invalid-target");
    }
  }
  return { hostname: host.toLowerCase(), port };
}

// Host = uri-host [ ":" port ] (RFC 9110 §7.2); uri-host = IP-literal / IPv4address / reg-name.
const HOST_FIELD = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?$/;

/**
 * Whether a `Host` field value is syntactically valid (RFC 9110 §7.2). An empty
 * value is valid (a URI with an empty authority). RFC 9112 §3.2: a server MUST
 * answer 400 to a Host field with an invalid value.
 */
export function isValidHost(value: string): boolean {
  return HOST_FIELD.test(value);
}
