/**
 * Message body length rules (RFC 9112 §6.3) for requests and responses.
 * Pure: no I/O.
 *
 * @module
 */
import { isToken, parseDecimal } from "./ascii.ts";
import { NotImplementedError, ParseError } from "./errors.ts";
import { type Field, getAll, splitList, trimOws } from "./fields.ts";
import type { RequestHead, ResponseHead } from "./head.ts";

/** How a message body is delimited. */
export type Framing =
  | { readonly kind: "none" }
  | { readonly kind: "length"; readonly length: number }
  /** `codings`: transfer codings applied before chunked (kept on the body, responses only). */
  | { readonly kind: "chunked"; readonly codings: readonly string[] }
  /** `codings`: transfer codings of a close-delimited body (kept on the body). */
  | { readonly kind: "close"; readonly codings: readonly string[] };

const NO_CODINGS: readonly string[] = Object.freeze([]);
const NONE: Framing = Object.freeze({ kind: "none" });
const CHUNKED: Framing = Object.freeze({ kind: "chunked", codings: NO_CODINGS });
const CLOSE: Framing = Object.freeze({ kind: "close", codings: NO_CODINGS });

/**
 * Parses `Content-Length` (RFC 9110 §8.6): strict digits; repeated or
 * comma-joined values must all be equal. Returns -1 when absent.
 *
 * @throws {ParseError} `invalid-content-length` or `conflicting-content-length`.
 */
export function contentLength(fields: readonly Field[]): number {
  const values = getAll(fields, "content-length");
  if (values.length === 0) return -1;
  let length = -1;
  // The usual single, plain value needs no splitting.
  if (values.length === 1 && !values[0].includes(",")) {
    const n = parseDecimal(trimOws(values[0]));
    if (n < 0) throw new ParseError("Cannot parse Content-Length", "invalid-content-length");
    return n;
  }
  for (const value of values) {
    for (const part of value.split(",")) {
      const n = parseDecimal(trimOws(part));
      if (n < 0) throw new ParseError("Cannot parse Content-Length", "invalid-content-length");
      if (length !== -1 && n !== length) {
        throw new ParseError("Cannot accept differing Content-Length values", "conflicting-content-length");
      }
      length = n;
    }
  }
  return length;
}

/**
 * The transfer codings, or null when there is no `Transfer-Encoding` field.
 * Each is its name lower-cased, followed by its parameters as sent (whitespace
 * around `;` and `=` removed): `gzip;level=1` stays `gzip;level=1` when relayed.
 *
 * @throws {ParseError} `invalid-transfer-encoding` when a coding or parameter is not
 *   `token *( OWS ";" OWS token BWS "=" BWS ( token / quoted-string ) )` (RFC 9112 §7).
 */
function transferCodings(fields: readonly Field[]): string[] | null {
  const values = getAll(fields, "transfer-encoding");
  if (values.length === 0) return null;
  const codings: string[] = [];
  for (const element of splitList(values)) codings.push(transferCoding(element));
  return codings;
}

const TRANSFER_PARAMETER =
  /^[\t ]*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)[\t ]*=[\t ]*([!#$%&'*+\-.^_`|~0-9A-Za-z]+|"(?:[^"\\]|\\.)*")[\t ]*$/;

function transferCoding(element: string): string {
  const parts = splitParameters(element);
  const name = trimOws(parts[0]);
  if (!isToken(name)) throw new ParseError("Cannot parse Transfer-Encoding", "invalid-transfer-encoding");
  let text = name.toLowerCase();
  // RFC 9112 §7.1: chunked takes no parameters; "chunked;x=1" would frame nothing we could relay.
  if (text === "chunked" && parts.length > 1) {
    throw new ParseError("Cannot parse Transfer-Encoding", "invalid-transfer-encoding");
  }
  for (let i = 1; i < parts.length; i++) {
    const m = TRANSFER_PARAMETER.exec(parts[i]);
    if (m === null) throw new ParseError("Cannot parse Transfer-Encoding", "invalid-transfer-encoding");
    text += `;${m[1]}=${m[2]}`;
  }
  return text;
}

/** Splits a list element at `;` outside quoted strings. */
function splitParameters(element: string): string[] {
  const parts: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < element.length; i++) {
    const c = element.charCodeAt(i);
    if (quoted) {
      if (c === 0x5c) i++;
      else if (c === 0x22) quoted = false;
    } else if (c === 0x22) quoted = true;
    else if (c === 0x3b) {
      parts.push(element.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(element.slice(start));
  return parts;
}

/**
 * Decides the body framing of a request (RFC 9112 §6.3, rules 3-6).
 *
 * @throws {ParseError} 400 for Transfer-Encoding with Content-Length, in HTTP/1.0,
 *   or without a single final `chunked`; for an invalid Content-Length.
 * @throws {NotImplementedError} 501 for any transfer coding other than `chunked`.
 */
export function requestFraming(head: RequestHead): Framing {
  const codings = transferCodings(head.fields);
  if (codings !== null) {
    if (head.minor === 0) {
      // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
      throw new ParseError("Cannot accept Transfer-Encoding in an HTTP/1.0 request", "te-in-http10");
    }
    if (getAll(head.fields, "content-length").length > 0) {
      // RFC 9112 §6.3: CL with TE is a smuggling vector; reject and close.
      throw new ParseError("Cannot accept both Transfer-Encoding and Content-Length", "te-with-cl");
    }
    const last = codings.length - 1;
    if (last < 0 || codings[last] !== "chunked" || codings.indexOf("chunked") !== last) {
      throw new ParseError("Cannot determine body length: chunked is not the final transfer coding", "te-not-chunked");
    }
    if (last > 0) throw new NotImplementedError("Transfer coding not implemented", "unsupported-transfer-coding");
    return CHUNKED;
  }
  const length = contentLength(head.fields);
  return length >= 0 ? { kind: "length", length } : NONE;
}

/**
 * Decides the body framing of a response to `method` (RFC 9112 §6.3, rules 1-7).
 * Ambiguous framing is an error (the proxy answers 502 instead).
 *
 * @throws {ParseError} for TE with CL, TE in HTTP/1.0, a transfer coding other than
 *   a single final `chunked`, or an invalid Content-Length.
 */
export function responseFraming(head: ResponseHead, method: string): Framing {
  const status = head.status;
  if (method === "HEAD" || status < 200 || status === 204 || status === 304) return NONE;
  const codings = transferCodings(head.fields);
  if (codings !== null) {
    if (head.minor === 0) {
      throw new ParseError("Cannot accept Transfer-Encoding in an HTTP/1.0 response", "te-in-http10");
    }
    if (getAll(head.fields, "content-length").length > 0) {
      throw new ParseError("Cannot accept both Transfer-Encoding and Content-Length", "te-with-cl");
    }
    const chunkedAt = codings.indexOf("chunked");
    if (chunkedAt !== -1 && (chunkedAt !== codings.length - 1 || codings.lastIndexOf("chunked") !== chunkedAt)) {
      // RFC 9112 §6.1: chunked is applied once and last; anything else cannot be framed.
      throw new ParseError("Cannot relay a response with chunked not the final transfer coding", "te-not-chunked");
    }
    // RFC 9112 §6.3: a final chunked frames the body; otherwise it runs until close.
    // Other codings stay applied and are relayed.
    if (chunkedAt === -1) return { kind: "close", codings };
    if (codings.length > 1) return { kind: "chunked", codings: codings.slice(0, -1) };
    return CHUNKED;
  }
  const length = contentLength(head.fields);
  return length >= 0 ? { kind: "length", length } : CLOSE;
}

/** How the origin's body is framed toward the client. */
export type ClientFraming =
  /** `Content-Length: length`. */
  | { kind: "length"; length: number }
  /** No body; `length` is the Content-Length to keep (HEAD, 304), or -1 for none. */
  | { kind: "none"; length: number }
  /** Chunked for an HTTP/1.1 client, with the origin's other codings still applied and listed. */
  | { kind: "chunked"; codings: readonly string[] }
  /** Until the close, for an HTTP/1.0 client. */
  | { kind: "close" }
  /** An HTTP/1.0 client cannot receive a body with transfer codings other than chunked. */
  | { kind: "unsendable" };

/**
 * Re-chooses the framing of an origin's response body for the client (RFC 9112
 * §6.1, §6.3, §7): a length stays a length; chunked and close-delimited bodies
 * go chunked to HTTP/1.1 clients and close-delimited to HTTP/1.0 clients, which
 * cannot receive other transfer codings at all. A body-less response keeps a
 * valid Content-Length it announced (HEAD, 304), never for 1xx or 204.
 */
export function clientFraming(res: ResponseHead, framing: Framing, clientMinor: number): ClientFraming {
  switch (framing.kind) {
    case "none": {
      let length = -1;
      if (res.status !== 204 && res.status >= 200) {
        try {
          length = contentLength(res.fields);
        } catch {
          // An invalid length on a body-less response is dropped rather than relayed.
        }
      }
      return { kind: "none", length };
    }
    case "length":
      return { kind: "length", length: framing.length };
    case "chunked":
    case "close":
      if (clientMinor === 1) return { kind: "chunked", codings: framing.codings };
      return framing.codings.length > 0 ? { kind: "unsendable" } : { kind: "close" };
  }
}
