/**
 * Byte classification tables and strict number scanners (RFC 9110 §5.6).
 * Pure: no I/O.
 *
 * @module
 */

/** Bytes the HTTP/1.1 grammar names (RFC 9112 §2.1, §5). */
export const CR = 13;
/** Line feed. */
export const LF = 10;
/** Space. */
export const SP = 32;
/** Horizontal tab. */
export const HTAB = 9;
/** The field-name / field-value separator. */
export const COLON = 58;

function table(chars: string, ranges: Array<[number, number]> = []): Uint8Array {
  const t = new Uint8Array(256);
  for (let i = 0; i < chars.length; i++) t[chars.charCodeAt(i)] = 1;
  for (const [lo, hi] of ranges) for (let b = lo; b <= hi; b++) t[b] = 1;
  return t;
}

/** tchar (RFC 9110 §5.6.2): 1 for bytes allowed in a token. */
export const TOKEN: Uint8Array = table("!#$%&'*+-.^_`|~", [
  [0x30, 0x39],
  [0x41, 0x5a],
  [0x61, 0x7a],
]);

/** field-vchar, SP and HTAB (RFC 9110 §5.5): 1 for bytes allowed in a field value. */
export const FIELD_VALUE: Uint8Array = table("\t ", [[0x21, 0x7e], [0x80, 0xff]]);

/**
 * Bytes allowed in a request-target: visible ASCII (RFC 3986 characters and the
 * few others that real clients send unescaped, such as `|`, `"`, `{`); no
 * controls, no space, no DEL, no octets above 0x7e.
 */
export const TARGET: Uint8Array = table("", [[0x21, 0x7e]]);

/** Value of a hex digit, or -1. */
export const HEX_VALUE: Int8Array = (() => {
  const t = new Int8Array(256).fill(-1);
  for (let i = 0; i < 10; i++) t[0x30 + i] = i;
  for (let i = 0; i < 6; i++) {
    t[0x41 + i] = 10 + i;
    t[0x61 + i] = 10 + i;
  }
  return t;
})();

/** The largest decimal digit count accepted for a length (fits in 2^53). */
export const MAX_DECIMAL_DIGITS = 15;

/**
 * Parses a strict non-negative decimal (1*DIGIT, at most 15 significant digits;
 * leading zeros allowed). Returns -1 when the text is not such a number.
 */
export function parseDecimal(text: string): number {
  const n = text.length;
  if (n === 0) return -1;
  let value = 0;
  let significant = 0;
  for (let i = 0; i < n; i++) {
    const d = text.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) return -1;
    if (significant > 0 || d !== 0) significant++;
    if (significant > MAX_DECIMAL_DIGITS) return -1;
    value = value * 10 + d;
  }
  return value;
}

/** Whether every character of `text` is a tchar (and there is at least one). */
export function isToken(text: string): boolean {
  if (text.length === 0) return false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff || TOKEN[c] === 0) return false;
  }
  return true;
}

const UTF8 = new TextDecoder();

/** Decodes bytes as ISO-8859-1, one char per byte (byte-exact round trip). */
export function latin1(bytes: Uint8Array, start = 0, end = bytes.length): string {
  const n = end - start;
  if (n >= 32) {
    // ASCII is the common case and decodes the same in UTF-8, natively and several
    // times faster. Any other byte either joins a multi-byte sequence (fewer chars
    // than bytes) or becomes U+FFFD: both checks below catch it and fall through.
    const text = UTF8.decode(bytes.subarray(start, end));
    if (text.length === n && text.indexOf("\uFFFD") === -1) return text;
  }
  let out = "";
  const STEP = 4096;
  for (let i = start; i < end; i += STEP) {
    out += String.fromCharCode.apply(
      null,
      bytes.subarray(i, Math.min(end, i + STEP)) as unknown as number[],
    );
  }
  return out;
}

/** Encodes a string of chars 0-255 as bytes, one byte per char. */
export function encodeLatin1(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  putLatin1(out, 0, text);
  return out;
}

/** Writes a string of chars 0-255 into `out` at `at`, one byte per char; returns the index after it. */
export function putLatin1(out: Uint8Array, at: number, text: string): number {
  for (let i = 0; i < text.length; i++) out[at + i] = text.charCodeAt(i);
  return at + text.length;
}
