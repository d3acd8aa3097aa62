/**
 * The request policy stage's built-in verdicts, as pure functions: Host rules,
 * request-target forms, loop detection, Max-Forwards, the CONNECT target and
 * port policy, keep-alive, and the fields forwarded to the origin. Each either
 * returns a decision or throws the {@link ProxyError} the client is answered
 * with. No I/O.
 *
 * @module
 */
import { parseDecimal } from "./ascii.ts";
import { ForbiddenError, LoopDetectedError, ParseError } from "./errors.ts";
import { connectionTokens, type Field, getAll, nameIs, stripHopByHop, viaContains } from "./fields.ts";
import type { RequestHead } from "./head.ts";
import type { Answer } from "./hook_messages.ts";
import { HookError, type HookName } from "./hooks.ts";
import { findInvalidField } from "./message_view.ts";
import { type AbsoluteTarget, isValidHost, parseAbsoluteTarget, parseAuthority } from "./target.ts";

/** Methods the proxy advertises in `Allow`. */
export const ALLOW = "GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH";
/** Fields not echoed by TRACE (RFC 9110 §9.3.8: exclude sensitive data). */
const TRACE_HIDDEN = new Set(["authorization", "proxy-authorization", "cookie"]);
const encoder = new TextEncoder();

/**
 * RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, with several, or
 * with an invalid one.
 *
 * @throws {ParseError} `multiple-host`, `missing-host`, `invalid-host`.
 */
export function checkHostFields(fields: readonly Field[], minor: number): void {
  const hosts = getAll(fields, "host");
  if (hosts.length > 1) throw new ParseError("Cannot accept more than one Host field", "multiple-host");
  if (hosts.length === 0 && minor === 1) throw new ParseError("Missing Host field", "missing-host");
  if (hosts.length === 1 && !isValidHost(hosts[0])) throw new ParseError("Invalid Host field", "invalid-host");
}

/**
 * RFC 9112 §9.3: a connection stays open after the response only for an
 * HTTP/1.1 client that did not ask to close ("A proxy server MUST NOT maintain a
 * persistent connection with an HTTP/1.0 client"), and not while stopping.
 */
export function isPersistent(minor: number, tokens: ReadonlySet<string>, stopping: boolean): boolean {
  return !stopping && minor === 1 && !tokens.has("close");
}

/**
 * Classifies a non-CONNECT request-target (RFC 9112 §3.2): asterisk-form is
 * only for OPTIONS and addresses the proxy itself (null); origin-form is not for
 * a proxy; absolute-form is parsed into where it goes.
 *
 * @throws {ParseError} `invalid-target`, `origin-form-to-proxy`, or a target parse error.
 */
export function targetVerdict(head: RequestHead): AbsoluteTarget | null {
  const target = head.target;
  if (target === "*") {
    if (head.method !== "OPTIONS") throw new ParseError("Asterisk-form is only valid for OPTIONS", "invalid-target");
    return null;
  }
  if (target.charCodeAt(0) === 0x2f) {
    throw new ParseError(
      "This is a proxy: send absolute-form requests (GET http://host/path) or CONNECT",
      "origin-form-to-proxy",
    );
  }
  return parseAbsoluteTarget(target, head.method);
}

/**
 * RFC 9110 §7.6.3: a request that already passed through this proxy (its
 * pseudonym in `Via`) is a loop.
 *
 * @throws {LoopDetectedError} 508.
 */
export function checkLoop(fields: readonly Field[], pseudonym: string, tag: string | null = null): void {
  if (viaContains(fields, pseudonym, tag)) throw new LoopDetectedError();
}

/**
 * RFC 9110 §7.6.2: the Max-Forwards value of a TRACE or OPTIONS request, or -1
 * when it does not apply (other methods, field absent or invalid).
 */
export function maxForwardsOf(head: RequestHead): number {
  if (head.method !== "TRACE" && head.method !== "OPTIONS") return -1;
  const values = getAll(head.fields, "max-forwards");
  return values.length > 0 ? parseDecimal(values[0]) : -1;
}

/** The answer to `OPTIONS *` or to OPTIONS with `Max-Forwards: 0` (RFC 9110 §9.3.7). */
export function optionsAnswer(): Answer {
  return { status: 200, reason: "OK", fields: [["Allow", ALLOW]], body: { kind: "bytes", data: new Uint8Array(0) } };
}

/** TRACE with `Max-Forwards: 0`: the request echoed as received, minus credentials (RFC 9110 §9.3.8). */
export function traceAnswer(head: RequestHead): Answer {
  let echo = `${head.method} ${head.target} HTTP/1.${head.minor}\r\n`;
  for (const [name, value] of head.fields) {
    if (!TRACE_HIDDEN.has(name.toLowerCase())) echo += `${name}: ${value}\r\n`;
  }
  echo += "\r\n";
  const data = new Uint8Array(echo.length);
  for (let i = 0; i < echo.length; i++) data[i] = echo.charCodeAt(i); // latin-1, byte for byte
  return { status: 200, reason: "OK", fields: [["Content-Type", "message/http"]], body: { kind: "bytes", data } };
}

/** The answer for `Max-Forwards: 0`, or null when the request is forwarded. */
export function maxForwardsAnswer(head: RequestHead, maxForwards: number): Answer | null {
  if (maxForwards !== 0) return null;
  return head.method === "OPTIONS" ? optionsAnswer() : traceAnswer(head);
}

/**
 * RFC 9110 §9.3.6: a CONNECT target is authority-form with a port.
 *
 * @throws {ParseError} `invalid-connect-target`.
 */
export function connectTarget(target: string): { hostname: string; port: number } {
  if (target.startsWith("/") || target.includes("/") || target.includes("@") || target === "*") {
    throw new ParseError("CONNECT needs an authority-form target (host:port)", "invalid-connect-target");
  }
  const colon = target.lastIndexOf(":");
  if (colon === -1 || colon === target.length - 1 || (target.startsWith("[") && colon < target.indexOf("]"))) {
    throw new ParseError("CONNECT needs an authority-form target with a port (host:port)", "invalid-connect-target");
  }
  return parseAuthority(target, 0);
}

/**
 * The CONNECT port policy (`"*"` allows every port).
 *
 * @throws {ForbiddenError} `connect-port-denied`.
 */
export function checkConnectPort(ports: readonly number[] | "*", port: number): void {
  if (ports !== "*" && !ports.includes(port)) {
    // The port is a parsed number and the list the operator's own: safe to name both.
    throw new ForbiddenError(
      `CONNECT to port ${port} is not allowed (allowed: ${ports.join(", ")}; see --connect-ports)`,
      "connect-port-denied",
    );
  }
}

/** The fields forwarded to the origin: Host from the target, end-to-end fields, Max-Forwards, Via. */
export function forwardFields(
  head: RequestHead,
  tokens: ReadonlySet<string>,
  authority: string,
  maxForwards: number,
  keep: ReadonlySet<string> | undefined,
  via: Field,
): Field[] {
  const out: Field[] = [["Host", authority]];
  for (const f of stripHopByHop(head.fields, tokens, keep)) {
    const name = f[0];
    if (nameIs(name, "host")) continue;
    if (maxForwards > 0 && nameIs(name, "max-forwards")) {
      out.push([name, String(maxForwards - 1)]);
      continue;
    }
    // RFC 9110 §10.1.1: a 100-continue expectation in HTTP/1.0 is ignored.
    if (head.minor === 0 && nameIs(name, "expect")) continue;
    out.push(f);
  }
  out.push(via);
  return out;
}

/**
 * Re-checks fields a hook may have edited before they are serialised: valid
 * names and values, and hop-by-hop and framing fields removed again (the proxy
 * owns them; `keep` names ones it forwards on purpose, such as `upgrade`).
 *
 * @throws {HookError} `hook-<name>-invalid` when an entry cannot be written as a field line.
 */
export function finishHookFields(fields: readonly Field[], hook: HookName, keep?: ReadonlySet<string>): Field[] {
  if (findInvalidField(fields) !== -1) throw new HookError(hook, "invalid");
  return stripHopByHop(fields, connectionTokens(fields), keep);
}

/** Whether a hook's destination can be dialled: a host name and a port 1-65535. */
export function isValidDestination(dest: { hostname: unknown; port: unknown }): boolean {
  return typeof dest.hostname === "string" && dest.hostname.length > 0 && !/[\s/@]/.test(dest.hostname) &&
    typeof dest.port === "number" && Number.isInteger(dest.port) && dest.port >= 1 && dest.port <= 65535;
}

/** Encodes text as UTF-8 (for answer bodies). */
export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}
