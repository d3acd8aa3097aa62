/**
 * Head serialization (RFC 9112 §2.1). Pure: no I/O.
 *
 * @module
 */
import { COLON, CR, LF, putLatin1, SP } from "./ascii.ts";
import type { Field } from "./fields.ts";

/**
 * Serializes a start line and field lines into head bytes, ending with the
 * empty line, followed by `body` if given. Field names and values are written
 * exactly as given (latin-1). With `into`, the bytes are written there when they
 * fit and a view of it is returned (no allocation); otherwise a new array.
 */
export function serializeHead(
  startLine: string,
  fields: readonly Field[],
  body?: Uint8Array | null,
  into?: Uint8Array,
): Uint8Array {
  // Copied char by char into the buffer: no string is built (concatenating the head
  // made a string per piece and a flat copy, about a tenth of the bytes allocated per
  // request), and a char is its latin-1 byte.
  let size = startLine.length + 4;
  for (let i = 0; i < fields.length; i++) size += fields[i][0].length + fields[i][1].length + 4;
  // A small body rides in the same buffer: one write, one segment (no Nagle stall).
  const total = size + (body ? body.length : 0);
  const out = into !== undefined && into.length >= total ? into : new Uint8Array(total);
  let at = putLatin1(out, 0, startLine);
  out[at++] = CR;
  out[at++] = LF;
  for (let i = 0; i < fields.length; i++) {
    const field = fields[i];
    at = putLatin1(out, at, field[0]);
    out[at++] = COLON;
    out[at++] = SP;
    at = putLatin1(out, at, field[1]);
    out[at++] = CR;
    out[at++] = LF;
  }
  out[at++] = CR;
  out[at++] = LF;
  if (body) out.set(body, size);
  return out.length === total ? out : out.subarray(0, total);
}

/** Size of the scratch buffers heads are built in (buffers.ts; larger heads get their own). */
export const SCRATCH_BYTES = 8192;

/** Reason phrases for the statuses the proxy itself generates. */
export const REASON: Readonly<Record<number, string>> = Object.freeze({
  100: "Continue",
  200: "OK",
  400: "Bad Request",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  407: "Proxy Authentication Required",
  408: "Request Timeout",
  413: "Content Too Large",
  414: "URI Too Long",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
  508: "Loop Detected",
});

let cachedSecond = -1;
let cachedDate = "";

/** The current time as an IMF-fixdate (RFC 9110 §5.6.7), cached per second. */
export function httpDate(now = Date.now()): string {
  const second = Math.floor(now / 1000);
  if (second !== cachedSecond) {
    cachedSecond = second;
    cachedDate = new Date(second * 1000).toUTCString();
  }
  return cachedDate;
}
