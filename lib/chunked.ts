/**
 * Chunked transfer coding (RFC 9112 §7.1): a decoder state machine and the
 * encoder's framing helpers. Pure: no I/O.
 *
 * @module
 */
import { CR, HEX_VALUE, LF, TOKEN } from "./ascii.ts";
import { ParseError } from "./errors.ts";
import type { Field } from "./fields.ts";
import { DEFAULT_HEAD_LIMITS, type HeadLimits, HeadParser } from "./head.ts";

/** Limits for the chunked decoder. */
export interface ChunkedLimits {
  /** Longest chunk-size line (size, extensions), in bytes (default 4096). */
  maxChunkLineBytes: number;
  /** Limits for the trailer section. */
  trailer: HeadLimits;
  /**
   * The body comes from an origin: its trailer section is read as a response head
   * is (obs-fold replaced, whitespace before a colon removed; RFC 9112 §5.1, §5.2).
   */
  fromOrigin?: boolean;
}

/** Default chunked limits. */
export const DEFAULT_CHUNKED_LIMITS: Readonly<ChunkedLimits> = Object.freeze({
  maxChunkLineBytes: 4096,
  trailer: DEFAULT_HEAD_LIMITS,
});

/** 16^13 = 2^52: chunk sizes with more significant hex digits are refused. */
const MAX_SIZE_DIGITS = 13;

const enum State {
  Size,
  AfterSize,
  Extension,
  SizeLf,
  Data,
  DataCr,
  DataLf,
  Trailer,
  Done,
}

/**
 * Decodes a chunked body incrementally. Call {@link ChunkedDecoder.step} with
 * received bytes; it returns how many it consumed and, when it reached chunk
 * data, exposes that data as `data` (a view into the input, valid until the
 * input buffer is reused). After the last chunk and trailer section, `done` is
 * true and the bytes past the returned count belong to the next message.
 *
 * @example
 * ```ts
 * const dec = new ChunkedDecoder();
 * let input = new TextEncoder().encode("3\r\nabc\r\n0\r\n\r\n");
 * while (input.length > 0 && !dec.done) {
 *   const n = dec.step(input);
 *   if (dec.data) console.log(dec.data.length); // 3
 *   input = input.subarray(n);
 * }
 * ```
 */
export class ChunkedDecoder {
  /** Chunk data found by the last {@link step}, or null. */
  data: Uint8Array | null = null;
  /** True after the last chunk and the trailer section. */
  done = false;
  /** Trailer fields (available when `done`). */
  trailers: Field[] = [];

  readonly #limits: ChunkedLimits;
  #state = State.Size;
  #size = 0;
  #digits = 0;
  #significant = 0;
  #lineBytes = 0;
  #ext: number[] = [];
  #trailer: HeadParser | null = null;

  /** Creates a decoder for one chunked body. */
  constructor(limits: ChunkedLimits = DEFAULT_CHUNKED_LIMITS) {
    this.#limits = limits;
  }

  /**
   * Consumes bytes of `input` until it reaches chunk data (returned in `data`,
   * at most `maxData` bytes), the end of the body, or the end of the input.
   * Returns the count consumed.
   *
   * @throws {ParseError} on malformed chunk framing.
   */
  step(input: Uint8Array, maxData = Infinity): number {
    this.data = null;
    let i = 0;
    const n = input.length;
    while (i < n) {
      switch (this.#state) {
        case State.Size: {
          const b = input[i];
          const v = HEX_VALUE[b];
          if (v >= 0) {
            if (this.#significant > 0 || v !== 0) this.#significant++;
            if (this.#significant > MAX_SIZE_DIGITS) throw bad("chunk size too large", "chunk-size-overflow");
            this.#size = this.#size * 16 + v;
            this.#digits++;
            this.#line();
            i++;
            continue;
          }
          if (this.#digits === 0) throw bad("invalid chunk size", "invalid-chunk-size");
          this.#state = State.AfterSize;
          continue;
        }
        case State.AfterSize: {
          const b = input[i];
          if (b === CR) {
            this.#state = State.SizeLf;
          } else if (b === 0x3b /* ; */ || b === 0x20 || b === 0x09) {
            this.#ext.push(b);
            this.#state = State.Extension;
          } else {
            throw bad("invalid chunk size", "invalid-chunk-size");
          }
          this.#line();
          i++;
          continue;
        }
        case State.Extension: {
          const b = input[i];
          this.#line();
          i++;
          if (b === CR) {
            checkExtensions(this.#ext);
            this.#ext = [];
            this.#state = State.SizeLf;
          } else {
            this.#ext.push(b);
          }
          continue;
        }
        case State.SizeLf: {
          if (input[i] !== LF) throw bad("chunk size line not terminated by CRLF", "invalid-chunk-line");
          i++;
          this.#lineBytes = 0;
          this.#digits = 0;
          this.#significant = 0;
          if (this.#size === 0) {
            this.#trailer = new HeadParser(
              this.#limits.fromOrigin ? "response-trailer" : "trailer",
              this.#limits.trailer,
            );
            this.#state = State.Trailer;
          } else {
            this.#state = State.Data;
          }
          continue;
        }
        case State.Data: {
          const take = Math.min(this.#size, n - i, maxData);
          if (take === 0) return i;
          this.data = input.subarray(i, i + take);
          this.#size -= take;
          if (this.#size === 0) this.#state = State.DataCr;
          return i + take;
        }
        case State.DataCr:
          if (input[i] !== CR) throw bad("chunk data not followed by CRLF", "invalid-chunk-data");
          this.#state = State.DataLf;
          i++;
          continue;
        case State.DataLf:
          if (input[i] !== LF) throw bad("chunk data not followed by CRLF", "invalid-chunk-data");
          this.#state = State.Size;
          i++;
          continue;
        case State.Trailer: {
          const used = this.#trailer!.push(input.subarray(i));
          i += used;
          if (this.#trailer!.complete) {
            this.trailers = this.#trailer!.fields;
            this.#trailer = null;
            this.#state = State.Done;
            this.done = true;
            return i;
          }
          continue;
        }
        case State.Done:
          return i;
      }
    }
    return i;
  }

  #line(): void {
    if (++this.#lineBytes > this.#limits.maxChunkLineBytes) {
      throw bad("chunk size line too long", "chunk-line-too-long");
    }
  }
}

function bad(what: string, code: string): ParseError {
  return new ParseError(`Cannot parse chunked body: ${what}`, code);
}

/**
 * Validates chunk extensions (RFC 9112 §7.1.1):
 * `*( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )`.
 */
function checkExtensions(ext: number[]): void {
  let i = 0;
  const n = ext.length;
  const ws = () => {
    while (i < n && (ext[i] === 0x20 || ext[i] === 0x09)) i++;
  };
  const token = () => {
    const start = i;
    while (i < n && TOKEN[ext[i]] === 1) i++;
    if (i === start) throw bad("invalid chunk extension", "invalid-chunk-extension");
  };
  while (i < n) {
    ws(); // BWS is only allowed before ";" (or "="): trailing whitespace is invalid
    if (i === n || ext[i] !== 0x3b) throw bad("invalid chunk extension", "invalid-chunk-extension");
    i++;
    ws();
    token();
    const afterName = i;
    ws();
    if (i < n && ext[i] === 0x3d /* = */) {
      i++;
      ws();
      if (i < n && ext[i] === 0x22) {
        i++;
        while (true) {
          if (i >= n) throw bad("unterminated quoted string in chunk extension", "invalid-chunk-extension");
          const c = ext[i];
          if (c === 0x22) break;
          // quoted-pair = "\\" ( HTAB / SP / VCHAR / obs-text ): the escaped byte is checked too.
          if (c === 0x5c && i + 1 < n) i++;
          const q = ext[i];
          if (q !== 0x09 && (q < 0x20 || q === 0x7f)) {
            throw bad("invalid chunk extension", "invalid-chunk-extension");
          }
          i++;
        }
        i++;
      } else {
        token();
      }
    } else {
      i = afterName; // BWS is only allowed before "=" or ";": trailing whitespace is invalid
    }
  }
}

/** The chunk-size line for a chunk of `size` bytes: `<hex>\r\n`. */
export function chunkSizeLine(size: number): string {
  return `${size.toString(16)}\r\n`;
}
