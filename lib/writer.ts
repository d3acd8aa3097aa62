/**
 * Writing bytes and framed bodies to a connection, with backpressure: every
 * write is awaited before the next read, so no body is ever held in memory.
 *
 * @module
 */
import type { Field } from "./fields.ts";
import { serializeHead } from "./serialize.ts";

/** The part of `Deno.Conn` a writer needs. */
export interface Writable {
  write(p: Uint8Array): Promise<number>;
}

/** Writes all of `data`. */
export function writeAll(conn: Writable, data: Uint8Array): Promise<void> {
  if (data.length === 0) return DONE;
  // The usual write takes everything at once: no async frame of our own and no view
  // unless the write was partial (then the rest follows in a loop).
  return conn.write(data).then((n) => {
    if (n >= data.length) return;
    // A counting writer counted all of `data`; what was not written is counted again with the rest.
    if (conn instanceof CountingWriter) conn.written -= data.length - n;
    return writeRest(conn, data, n);
  }, (error) => {
    // Nothing of a failed write reached the peer.
    if (conn instanceof CountingWriter) conn.written -= data.length;
    throw error;
  });
}

/**
 * A connection's writes, counted (bytes to the client for exchange records):
 * synchronously, without a promise per write; {@link writeAll} corrects the
 * count for a partial write.
 */
export class CountingWriter implements Writable {
  /** Bytes written so far. */
  written = 0;
  /** Counts writes to `conn`. */
  constructor(readonly conn: Writable) {}
  /** Writes (some of) `p`; counts all of it (see {@link writeAll}). */
  write(p: Uint8Array): Promise<number> {
    this.written += p.length;
    return this.conn.write(p);
  }
}

async function writeRest(conn: Writable, data: Uint8Array, offset: number): Promise<void> {
  while (offset < data.length) {
    const rest = data.length - offset;
    let n: number;
    try {
      n = await conn.write(data.subarray(offset));
    } catch (error) {
      if (conn instanceof CountingWriter) conn.written -= rest;
      throw error;
    }
    if (n < rest && conn instanceof CountingWriter) conn.written -= rest - n;
    offset += n;
  }
}

const DONE: Promise<void> = Promise.resolve();

/** Writes data as-is (identity framing: Content-Length or close-delimited). */
export class RawBodyWriter {
  /** Bytes written so far. */
  bytes = 0;
  /** Wraps a connection. */
  constructor(readonly conn: Writable) {}
  /** Writes one piece of body data. */
  write(data: Uint8Array): Promise<void> {
    this.bytes += data.length;
    return writeAll(this.conn, data);
  }
  /** Nothing to write at the end of an identity body. */
  end(_trailers?: readonly Field[]): Promise<void> {
    return Promise.resolve();
  }
}

const HEX = "0123456789abcdef";
/** Pieces up to this size are copied next to their framing to save write calls. */
const COALESCE_BYTES = 65536;

/** Writes data with chunked framing (RFC 9112 §7.1). */
export class ChunkedBodyWriter {
  /** Body bytes written so far (without framing). */
  bytes = 0;
  #scratch: Uint8Array | null = null;
  /** Wraps a connection. */
  constructor(readonly conn: Writable) {}

  /** Writes one chunk (empty data writes nothing: a zero chunk would end the body). */
  async write(data: Uint8Array): Promise<void> {
    const n = data.length;
    if (n === 0) return;
    this.bytes += n;
    let digits = 0;
    for (let v = n; v > 0; v = Math.floor(v / 16)) digits++;
    const frame = digits + 4;
    if (n <= COALESCE_BYTES) {
      const need = n + frame;
      if (this.#scratch === null || this.#scratch.length < need) {
        this.#scratch = new Uint8Array(Math.max(need, 1024));
      }
      const out = this.#scratch;
      let p = writeHex(out, n, digits);
      out[p++] = 13;
      out[p++] = 10;
      out.set(data, p);
      p += n;
      out[p++] = 13;
      out[p++] = 10;
      await writeAll(this.conn, out.subarray(0, p));
      return;
    }
    const head = new Uint8Array(digits + 2);
    writeHex(head, n, digits);
    head[digits] = 13;
    head[digits + 1] = 10;
    await writeAll(this.conn, head);
    await writeAll(this.conn, data);
    await writeAll(this.conn, CRLF);
  }

  /** Writes the last chunk and the trailer section. */
  end(trailers: readonly Field[] = []): Promise<void> {
    if (trailers.length === 0) return writeAll(this.conn, LAST_CHUNK);
    // serializeHead writes "0\r\n", the field lines and the final CRLF.
    return writeAll(this.conn, serializeHead("0", trailers));
  }
}

const CRLF = new Uint8Array([13, 10]);
const LAST_CHUNK = new Uint8Array([0x30, 13, 10, 13, 10]);

function writeHex(out: Uint8Array, n: number, digits: number): number {
  for (let i = digits - 1; i >= 0; i--) {
    out[i] = HEX.charCodeAt(n % 16);
    n = Math.floor(n / 16);
  }
  return digits;
}

/** A body writer of either kind. */
export type BodyWriter = RawBodyWriter | ChunkedBodyWriter;

/** A whole chunked body: one chunk (if any data), the last chunk and the trailers. */
export function encodeChunked(data: Uint8Array, trailers: readonly Field[]): Uint8Array {
  const size = data.length > 0 ? `${data.length.toString(16)}\r\n` : "";
  const tail = serializeHead("0", trailers);
  const out = new Uint8Array(size.length + data.length + (data.length > 0 ? 2 : 0) + tail.length);
  let p = 0;
  for (let i = 0; i < size.length; i++) out[p++] = size.charCodeAt(i);
  out.set(data, p);
  p += data.length;
  if (data.length > 0) {
    out[p++] = 13;
    out[p++] = 10;
  }
  out.set(tail, p);
  return out;
}
