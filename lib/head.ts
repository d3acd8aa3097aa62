/**
 * Incremental HTTP/1.1 head parser (RFC 9112 §2-§5) for requests, responses
 * and trailer sections. Pure: no I/O.
 *
 * The contract follows picohttpparser: {@link HeadParser.push} consumes what it
 * can and returns the number of bytes it used. Complete lines are parsed as soon
 * as they arrive; only an unfinished line is carried over to the next push, so
 * no byte is ever scanned twice from the start. When `complete` is true, the
 * bytes of the chunk past the returned count belong to whatever follows the head.
 *
 * @module
 */
import { COLON, CR, FIELD_VALUE, HTAB, latin1, LF, SP, TARGET, TOKEN } from "./ascii.ts";
import { HeadTooLargeError, ParseError, UriTooLongError, VersionNotSupportedError } from "./errors.ts";
import type { Field } from "./fields.ts";

/** Size limits for one head. */
export interface HeadLimits {
  /** Longest request line or status line, in bytes (default 8192; over it: 414). */
  maxRequestLineBytes: number;
  /** Longest head (start line and all field lines), in bytes (default 65536; over it: 431). */
  maxHeadBytes: number;
  /** Most field lines in one head or trailer section (default 100; over it: 431). */
  maxFields: number;
}

/** Default head limits. */
export const DEFAULT_HEAD_LIMITS: Readonly<HeadLimits> = Object.freeze({
  maxRequestLineBytes: 8192,
  maxHeadBytes: 65536,
  maxFields: 1000,
});

/** A parsed request head. */
export interface RequestHead {
  /** The method token, case preserved (RFC 9110 §9.1: methods are case-sensitive). */
  method: string;
  /** The request-target as received, byte for byte (as latin-1). */
  target: string;
  /** The minor HTTP version: 0 or 1 (a higher 1.x is treated as 1.1, RFC 9110 §2.5). */
  minor: number;
  /** Field lines in order, as received. */
  fields: Field[];
}

/** A parsed response head. */
export interface ResponseHead {
  /** The minor HTTP version of the sender: 0 or 1 (higher 1.x read as 1). */
  minor: number;
  /** The three-digit status code. */
  status: number;
  /** The reason phrase (may be empty). */
  reason: string;
  /** Field lines in order (obs-fold replaced by SP, RFC 9112 §5.2). */
  fields: Field[];
}

/** Which kind of head a {@link HeadParser} reads. */
export type HeadKind = "request" | "response" | "trailer" | "response-trailer";

/** RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line. */
const MAX_LEADING_EMPTY_LINES = 8;

/** Incremental parser for one head. Create a new one per message. */
export class HeadParser {
  /** Fields parsed so far, in order. */
  readonly fields: Field[] = [];
  /** True once the empty line that ends the head has been consumed. */
  complete = false;
  /** Request line parts (kind "request"). */
  method = "";
  /** Request target (kind "request"). */
  target = "";
  /** Minor version (kinds "request" and "response"). */
  minor = 1;
  /** Status code (kind "response"). */
  status = 0;
  /** Reason phrase (kind "response"). */
  reason = "";
  /** Total bytes consumed into this head so far. */
  bytesConsumed = 0;

  readonly #kind: HeadKind;
  /**
   * From an origin (a response head or its trailers): whitespace before a colon is
   * removed and obs-fold replaced, as RFC 9112 §5.1/§5.2 require of a proxy.
   */
  readonly #lenient: boolean;
  readonly #limits: HeadLimits;
  #startLineDone: boolean;
  #leadingEmpty = 0;
  #carry: Uint8Array | null = null;
  #carryLength = 0;
  /** The chunk being parsed, its latin-1 text (decoded on first use), or the carried line's text. */
  #bytes: Uint8Array | null = null;
  #text: string | null = null;
  #textEnd = 0;
  #lineText: string | null = null;

  /** Creates a parser for one request, response or trailer section. */
  constructor(kind: HeadKind, limits: HeadLimits = DEFAULT_HEAD_LIMITS) {
    this.#kind = kind;
    this.#limits = limits;
    this.#startLineDone = kind === "trailer" || kind === "response-trailer";
    this.#lenient = kind === "response" || kind === "response-trailer";
  }

  #startLineDoneAtStart(): boolean {
    return this.#kind === "trailer" || this.#kind === "response-trailer";
  }

  /** Whether any byte of this head has been received. */
  get started(): boolean {
    return this.bytesConsumed > 0 || this.#carryLength > 0;
  }

  /**
   * Feeds bytes. Returns how many were consumed: all of them while the head is
   * incomplete, or the count up to and including the final empty line.
   *
   * @throws {ParseError} on malformed syntax (RFC 9112).
   * @throws {UriTooLongError} when the start line exceeds its limit.
   * @throws {HeadTooLargeError} when the head exceeds its byte or field limit.
   * @throws {VersionNotSupportedError} for an HTTP major version other than 1.
   */
  push(chunk: Uint8Array): number {
    let pos = 0;
    this.#text = null;
    while (pos < chunk.length) {
      const lf = chunk.indexOf(LF, pos);
      if (lf === -1) {
        this.#append(chunk, pos, chunk.length);
        this.#checkPartial();
        return chunk.length;
      }
      // A line is handled as (bytes, start, end) indices: no view and no string per line.
      let bytes = chunk;
      let start = pos;
      let end = lf;
      if (this.#carryLength > 0) {
        this.#append(chunk, pos, lf);
        bytes = this.#carry!;
        start = 0;
        end = this.#carryLength;
        this.#carryLength = 0;
        this.#lineText = latin1(bytes, 0, end);
      } else {
        this.#lineText = null;
        this.#bytes = chunk;
      }
      pos = lf + 1;
      // Limits are checked in the same order as for a partial line (#checkPartial), so
      // the outcome never depends on how the bytes were split.
      const limitError = this.#limitError(end - start);
      if (limitError !== null) throw limitError;
      this.bytesConsumed += end - start + 1;
      if (this.bytesConsumed > this.#limits.maxHeadBytes) throw this.#tooLarge();
      // RFC 9112 §2.2: a bare LF line terminator is only a MAY; refuse it (smuggling vector).
      if (end === start || bytes[end - 1] !== CR) {
        throw new ParseError("Cannot parse head: line not terminated by CRLF", "bare-lf");
      }
      this.#line(bytes, start, end - 1);
      if (this.complete) {
        this.#carry = null;
        this.#text = null;
        this.#lineText = null;
        return pos;
      }
    }
    return pos;
  }

  /** The string for bytes [from, to) of the current line (latin-1, decoded once per chunk). */
  #str(from: number, to: number): string {
    if (this.#lineText !== null) return this.#lineText.slice(from, to);
    if (this.#text === null || to > this.#textEnd) {
      // Decode up to the empty line that ends the head: a body may follow it in the chunk.
      const bytes = this.#bytes!;
      const from0 = this.#text === null ? 0 : this.#textEnd;
      let end = bytes.length;
      for (let lf = bytes.indexOf(LF, Math.max(from0, to - 1)); lf !== -1; lf = bytes.indexOf(LF, lf + 1)) {
        if (bytes[lf + 1] === CR && bytes[lf + 2] === LF) {
          end = lf + 3;
          break;
        }
      }
      this.#text = (this.#text ?? "") + latin1(bytes, from0, end);
      this.#textEnd = end;
    }
    return this.#text.slice(from, to);
  }

  /** Returns the parsed request head (kind "request", once complete). */
  requestHead(): RequestHead {
    return { method: this.method, target: this.target, minor: this.minor, fields: this.fields };
  }

  /** Returns the parsed response head (kind "response", once complete). */
  responseHead(): ResponseHead {
    return { minor: this.minor, status: this.status, reason: this.reason, fields: this.fields };
  }

  #append(chunk: Uint8Array, from: number, to: number): void {
    const n = to - from;
    if (n === 0) return;
    const need = this.#carryLength + n;
    if (this.#carry === null || this.#carry.length < need) {
      // Bounded: #checkPartial throws before a line outgrows the head limit.
      const grown = new Uint8Array(Math.max(256, need * 2));
      if (this.#carry !== null) grown.set(this.#carry.subarray(0, this.#carryLength));
      this.#carry = grown;
    }
    this.#carry.set(chunk.subarray(from, to), this.#carryLength);
    this.#carryLength = need;
  }

  #startLineTooLong(): Error {
    return this.#kind === "request"
      ? new UriTooLongError()
      : new ParseError("Cannot parse status line: too long", "status-line-too-long");
  }

  #checkPartial(): void {
    const error = this.#limitError(this.#carryLength);
    if (error !== null) throw error;
  }

  /**
   * The limit error for a line of `length` bytes (without its LF), or null. When
   * both limits are exceeded, the one a byte-by-byte reader would cross first
   * wins, so the outcome never depends on how the bytes were split.
   */
  #limitError(length: number): Error | null {
    const headAt = this.#limits.maxHeadBytes - this.bytesConsumed + 1; // first length over the head limit
    const lineAt = this.#startLineDone ? Infinity : this.#limits.maxRequestLineBytes + 2;
    if (length < headAt && length < lineAt) return null;
    return lineAt <= headAt ? this.#startLineTooLong() : this.#tooLarge();
  }

  #tooLarge(): Error {
    if (!this.#startLineDone && this.#kind === "request") return new UriTooLongError();
    return new HeadTooLargeError(
      this.#startLineDoneAtStart() ? "Trailer section too large" : "Header section too large",
    );
  }

  /** Handles one line: bytes [start, end), `end` being the index of its CR. */
  #line(b: Uint8Array, start: number, end: number): void {
    if (!this.#startLineDone) {
      if (end === start && this.#kind === "request") {
        if (++this.#leadingEmpty > MAX_LEADING_EMPTY_LINES) {
          throw new ParseError("Cannot parse request: too many empty lines", "leading-empty-lines");
        }
        this.bytesConsumed -= 2; // leading empty lines do not count towards the head
        return;
      }
      // (The start-line limit was checked in push(), before this line was handled.)
      if (this.#kind === "request") this.#requestLine(b, start, end);
      else this.#statusLine(b, start, end);
      this.#startLineDone = true;
      return;
    }
    if (end === start) {
      this.complete = true;
      return;
    }
    const first = b[start];
    if (first === SP || first === HTAB) {
      this.#obsFold(b, start, end);
      return;
    }
    this.#fieldLine(b, start, end);
  }

  #requestLine(b: Uint8Array, start: number, end: number): void {
    // request-line = method SP request-target SP HTTP-version (RFC 9112 §3)
    let i = start;
    while (i < end && TOKEN[b[i]] === 1) i++;
    if (i === start || i === end || b[i] !== SP) {
      throw new ParseError("Cannot parse request line: invalid method", "invalid-method");
    }
    this.method = this.#str(start, i);
    const targetStart = ++i;
    while (i < end && TARGET[b[i]] === 1) i++;
    if (i === targetStart || i === end || b[i] !== SP) {
      throw new ParseError(
        i === end
          ? "Cannot parse request line: missing HTTP version"
          : "Cannot parse request line: invalid request target",
        i === end ? "missing-version" : "invalid-target",
      );
    }
    this.target = this.#str(targetStart, i);
    this.minor = parseVersion(b, i + 1, end, "request");
  }

  #statusLine(b: Uint8Array, start: number, end: number): void {
    // status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 §4)
    if (end - start < 12 || b[start + 8] !== SP) {
      throw new ParseError("Cannot parse status line", "invalid-status-line");
    }
    this.minor = parseVersion(b, start, start + 8, "response");
    let status = 0;
    for (let i = start + 9; i < start + 12; i++) {
      const d = b[i] - 0x30;
      if (d < 0 || d > 9) throw new ParseError("Cannot parse status line: invalid status code", "invalid-status");
      status = status * 10 + d;
    }
    if (status < 100 || status > 599) {
      throw new ParseError("Cannot parse status line: status code out of range", "invalid-status");
    }
    this.status = status;
    if (end === start + 12) return; // tolerated: no SP after the status code
    if (b[start + 12] !== SP) throw new ParseError("Cannot parse status line: invalid status code", "invalid-status");
    for (let i = start + 13; i < end; i++) {
      if (FIELD_VALUE[b[i]] === 0) {
        throw new ParseError("Cannot parse status line: invalid reason phrase", "invalid-reason");
      }
    }
    this.reason = this.#str(start + 13, end);
  }

  #fieldLine(b: Uint8Array, start: number, end: number): void {
    // field-line = field-name ":" OWS field-value OWS (RFC 9112 §5)
    let i = start;
    while (i < end && TOKEN[b[i]] === 1) i++;
    const nameEnd = i;
    // RFC 9112 §5.1: whitespace between the field name and colon: a server MUST reject the
    // request (400); a proxy MUST remove it from a response before forwarding.
    if (this.#lenient) { while (i < end && (b[i] === SP || b[i] === HTAB)) i++; }
    if (nameEnd === start || i === end || b[i] !== COLON) {
      throw new ParseError("Cannot parse field line: invalid field name", "invalid-field-name");
    }
    if (this.fields.length >= this.#limits.maxFields) throw this.#tooLarge();
    const name = this.#str(start, nameEnd);
    this.fields.push([name, this.#value(b, i + 1, end)]);
  }

  #obsFold(b: Uint8Array, start: number, end: number): void {
    // RFC 9112 §5.2: obs-fold. A server MUST reject it in a request; a proxy
    // MUST replace it by SP in a response. Whitespace before the first field
    // line is rejected (RFC 9112 §2.2).
    if (!this.#lenient || this.fields.length === 0) {
      throw new ParseError("Cannot parse field line: obsolete line folding", "obs-fold");
    }
    const more = this.#value(b, start, end);
    const last = this.fields[this.fields.length - 1];
    if (more) last[1] = last[1] ? `${last[1]} ${more}` : more;
  }

  #value(b: Uint8Array, from: number, end: number): string {
    let start = from;
    while (start < end && (b[start] === SP || b[start] === HTAB)) start++;
    let stop = end;
    while (stop > start && (b[stop - 1] === SP || b[stop - 1] === HTAB)) stop--;
    for (let i = start; i < stop; i++) {
      if (FIELD_VALUE[b[i]] === 0) {
        throw new ParseError("Cannot parse field line: invalid character in value", "invalid-field-value");
      }
    }
    return start === stop ? "" : this.#str(start, stop);
  }
}

/** Parses `HTTP/d.d` at line[from..to) and returns the minor version (0 or 1). */
function parseVersion(line: Uint8Array, from: number, to: number, kind: HeadKind): number {
  if (
    to - from !== 8 || line[from] !== 0x48 || line[from + 1] !== 0x54 || line[from + 2] !== 0x54 ||
    line[from + 3] !== 0x50 || line[from + 4] !== 0x2f || line[from + 6] !== 0x2e
  ) {
    throw new ParseError(`Cannot parse ${kind}: invalid HTTP version`, "invalid-version");
  }
  const major = line[from + 5] - 0x30;
  const minor = line[from + 7] - 0x30;
  if (major < 0 || major > 9 || minor < 0 || minor > 9) {
    throw new ParseError(`Cannot parse ${kind}: invalid HTTP version`, "invalid-version");
  }
  if (major !== 1) {
    if (kind === "request") throw new VersionNotSupportedError();
    throw new ParseError("Cannot parse response: unsupported HTTP version", "invalid-version");
  }
  // RFC 9110 §2.5: a higher minor version is processed as the highest we implement.
  return minor === 0 ? 0 : 1;
}
