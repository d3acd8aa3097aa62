/**
 * Head serialization (RFC 9112 §2.1). Pure: no I/O.
 *
 * @module
 */
import type { Field } from "./fields.ts";

const encoder = new TextEncoder();

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
  // One string, encoded natively in one call: much faster than a char-by-char copy.
  let text = startLine + "\r\n";
  for (let i = 0; i < fields.length; i++) text += fields[i][0] + ": " + fields[i][1] + "\r\n";
  text += "\r\n";
  const size = text.length;
  // A small body rides in the same buffer: one write, one segment (no Nagle stall).
  const total = size + (body ? body.length : 0);
  const out = into !== undefined && into.length >= total ? into : new Uint8Array(total);
  const done = encoder.encodeInto(text, out);
  // UTF-8 equals latin-1 only for ASCII: any other char makes read or written differ.
  if (done.read !== size || done.written !== size) put(out, 0, text);
  if (body) out.set(body, size);
  return out.length === total ? out : out.subarray(0, total);
}

function put(out: Uint8Array, at: number, text: string): number {
  for (let i = 0; i < text.length; i++) out[at + i] = text.charCodeAt(i);
  return at + text.length;
}

/** Size of the scratch buffers lent by {@link takeScratch}. */
export const SCRATCH_BYTES = 8192;
const scratchFree: Uint8Array[] = [];

/**
 * Lends a scratch buffer for serializing a head. Allocating a typed array costs
 * far more than filling one (backing store, GC accounting), so heads are built
 * in recycled buffers. A buffer handed to `conn.write()` must not be returned
 * with {@link giveScratch} before that write has settled.
 */
export function takeScratch(): Uint8Array {
  return scratchFree.pop() ?? new Uint8Array(SCRATCH_BYTES);
}

/** Returns a buffer lent by {@link takeScratch} (a bounded number is kept). */
export function giveScratch(buffer: Uint8Array): void {
  if (scratchFree.length < 64) scratchFree.push(buffer);
}

/** Reason phrases for the statuses the proxy itself generates. */
export const REASON: Readonly<Record<number, string>> = Object.freeze({
  100: "Continue",
  200: "OK",
  400: "Bad Request",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
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
