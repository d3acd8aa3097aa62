/**
 * `Proxy-Status` (RFC 9209) for the answers the proxy writes itself: its name
 * and the error type from the RFC's registry (§2.3) for each stable error code.
 * Pure: no I/O.
 *
 * @module
 */
import { ProxyError } from "./errors.ts";
import type { Field } from "./fields.ts";

/** RFC 9209 §2.3 error types for the proxy's own stable codes (others by status: see {@link proxyErrorType}). */
const TYPES: Readonly<Record<string, string>> = Object.freeze({
  "upstream-unresolvable": "dns_error",
  "upstream-refused": "connection_refused",
  "upstream-connect-timeout": "connection_timeout",
  "upstream-unreachable": "destination_ip_unroutable",
  "upstream-not-permitted": "destination_ip_prohibited",
  "upstream-connect-failed": "destination_unavailable",
  "upstream-reset": "connection_terminated",
  "upstream-closed": "connection_terminated",
  "upstream-write-failed": "connection_terminated",
  "upstream-response-timeout": "http_response_timeout",
  "upstream-truncated-head": "http_response_incomplete",
  "upstream-bad-framing": "http_response_transfer_coding",
  "upstream-coding-for-http10": "http_response_transfer_coding",
  "upstream-unexpected-101": "http_upgrade_failed",
  "upstream-too-many-interim": "http_protocol_error",
  "upstream-body-failed": "http_response_incomplete",
  "loop-detected": "proxy_loop_detected",
  "connect-port-denied": "http_request_denied",
  "destination-denied": "http_request_denied",
  "destination-ip-prohibited": "destination_ip_prohibited",
  "proxy-auth-required": "http_request_denied",
  "proxy-auth-failed": "http_request_denied",
  "client-denied": "http_request_denied",
  "parent-closed": "connection_terminated",
  "parent-truncated-head": "http_response_incomplete",
  "parent-reset": "connection_terminated",
  "parent-write-failed": "connection_terminated",
  "parent-bad-response": "http_protocol_error",
  "parent-too-many-interim": "http_protocol_error",
  "parent-timeout": "http_response_timeout",
  "connect-denied": "http_request_denied",
  // RFC 9209's connection_limit_reached is about connections to the next hop; a
  // refusal at the proxy's own limits is a local answer that never tried one.
  "max-connections": "proxy_internal_response",
  "max-connections-per-client": "proxy_internal_response",
});

/** The RFC 9209 error type for an error of the proxy's own. */
export function proxyErrorType(error: ProxyError): string {
  const known = TYPES[error.code];
  if (known !== undefined) return known;
  if (error.code === "upstream-bad-response") {
    // The origin's head was invalid: too large, or not HTTP at all.
    const cause = error.cause;
    return cause instanceof ProxyError && cause.code === "head-too-large"
      ? "http_response_header_section_size"
      : "http_protocol_error";
  }
  if (error.code.startsWith("hook-")) return "proxy_internal_error";
  if (error.status === 403) return "http_request_denied";
  if (error.status >= 400 && error.status < 500) return "http_request_error";
  return "proxy_internal_error";
}

/**
 * The proxy's name as a Proxy-Status list member: an sf-token when it is one
 * (it starts with a letter or `*`), else an sf-string. Names are `Via` tokens,
 * which hold no `"` or `\\`, so quoting is enough.
 */
export function proxyStatusName(name: string): string {
  return /^[A-Za-z*][A-Za-z0-9!#$%&'*+.^_`|~:\/-]*$/.test(name) ? name : `"${name}"`;
}

/** An sf-string of printable ASCII: `"` and `\\` escaped, anything else replaced by `?`. */
function sfString(text: string): string {
  return `"${text.replace(/[^\x20-\x7e]/g, "?").replace(/["\\]/g, "\\$&")}"`;
}

/**
 * The `Proxy-Status` field for an answer the proxy writes for `error`: its name
 * (the `Via` pseudonym) and the error type; with `details`, the stable code too
 * (it tells a client more about the path, so it is off by default).
 */
export function proxyStatusField(name: string, error: ProxyError, details = false): Field {
  const type = proxyErrorType(error);
  const member = proxyStatusName(name);
  return [
    "Proxy-Status",
    details ? `${member}; error=${type}; details=${sfString(error.code)}` : `${member}; error=${type}`,
  ];
}

/**
 * Our `Proxy-Status` member for an answer relayed from a parent proxy
 * (RFC 9209 §2.1.1 `received-status`; `next-hop` only with details on, since it
 * reveals topology).
 */
export function hopStatus(
  options: { via: string; proxyStatusDetails: boolean },
  status: number,
  parent: { display: string },
): Field {
  const next = options.proxyStatusDetails ? `; next-hop=${sfString(parent.display.replace(/^http:\/\//, ""))}` : "";
  return ["Proxy-Status", `${proxyStatusName(options.via)}; received-status=${status}${next}`];
}
