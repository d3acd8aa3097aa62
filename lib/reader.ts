/**
 * A buffered pull reader over a connection, and body readers that stop
 * exactly at the message boundary. Reads are single reads into our buffers
 * (the runtime's read op, or `conn.read()`: lib/direct_read.ts), never
 * `conn.readable`, so a peer's FIN leaves our write side open (half-close).
 *
 * @module
 */
import { giveBuffer, takeBuffer } from "./buffers.ts";
import { ChunkedDecoder, type ChunkedLimits } from "./chunked.ts";
import { type ReadOnce, readOnceFor } from "./direct_read.ts";
import { PrematureEofError } from "./errors.ts";
import type { Framing } from "./framing.ts";
import type { HeadParser } from "./head.ts";

/** The part of `Deno.Conn` the reader needs. */
export interface Readable {
  read(p: Uint8Array): Promise<number | null>;
}

/**
 * The first step up from the small buffer. A body that fills it too (a real bulk
 * transfer) moves on to the reader's largest size: large reads halve the reads
 * and writes per byte, but a 64 KiB response should not take a 256 KiB buffer.
 */
const MID_BYTES = 65536;

/**
 * Slots: small views into shared slabs, for reads that wait for a message to
 * start without a buffer of their own ({@link ConnReader} with `probe`). Each
 * waiting read has its own slot; a slot goes back to its list when the read settles.
 */
const SLOTS = new Map<number, Uint8Array[]>();
const SLOTS_PER_SLAB = 64;

function takeSlot(size: number): Uint8Array {
  let list = SLOTS.get(size);
  if (list === undefined) SLOTS.set(size, list = []);
  if (list.length === 0) {
    const slab = new Uint8Array(SLOTS_PER_SLAB * size);
    for (let at = slab.length - size; at >= 0; at -= size) list.push(slab.subarray(at, at + size));
  }
  return list.pop()!;
}

/** Gives a slot back once the read into it has settled. */
function giveSlot(slot: Uint8Array): void {
  SLOTS.get(slot.length)!.push(slot);
}

/**
 * The slot a fresh connection waits in: one byte (a connection that never sends
 * costs no buffer; one more read when it does).
 */
const FIRST_SLOT_BYTES = 1;
/**
 * The slot a kept-alive connection waits in between messages: a whole small
 * request head usually fits (one read, copied into the small buffer), so waiting
 * costs 512 bytes instead of the small buffer and no read more.
 */
const IDLE_SLOT_BYTES = 512;

/**
 * Pull reader over a connection. A chunk returned by {@link next} is a view
 * into the current buffer and stays valid until the next call; {@link unread}
 * gives back the tail of the last chunk so the next call returns it again.
 *
 * Memory follows activity: a reader owns a small buffer (`minBytes`, made on
 * its first read), borrows a larger one from the shared spare lists (buffers.ts) when a read
 * fills the small one (64 KiB, then `maxBytes` if that fills too: a bulk
 * transfer), and gives it back when reads come in small again or the
 * connection goes idle ({@link prefetch}).
 * So idle and small-message connections hold only the small buffer, and bulk
 * transfers reuse large buffers instead of allocating them.
 *
 * With `probe`, a connection waiting for its next message holds no buffer of its
 * own: the wait is a read into a slot of a shared slab ({@link prefetch},
 * {@link nextMessage}), and the small buffer is taken when bytes arrive. A fresh
 * connection waits in one byte (one more read when it sends: the rest of its head
 * is read behind that byte), a kept-alive one in 512 bytes (a small request head
 * arrives whole: no more reads than without).
 * Measured: a read more per request costs 13% of the requests per CPU-second, so
 * the kept-alive wait is not a one-byte one.
 */
export class ConnReader {
  /** One read on the connection (lib/direct_read.ts: the runtime's op when reachable). */
  readonly #readOnce: ReadOnce;
  readonly #min: number;
  readonly #max: number;
  readonly #probe: boolean;
  #small: Uint8Array | null = null;
  #buf: Uint8Array | null = null;
  #start = 0;
  #end = 0;
  #last: Uint8Array | null = null;
  #pending: Promise<number | null> | null = null;
  /** True from the start of a read into our buffer until its result is taken in. */
  #inFlight = false;
  /** >0: borrow a buffer of this size for the next read; -1: go back to the small one; 0: keep. */
  #want = 0;
  /** True once the peer has closed its sending side (or reset). */
  eof = false;
  /** Bytes handed out so far and not given back (wire bytes consumed, for exchange records). */
  consumed = 0;

  /**
   * Wraps a connection (buffers of `minBytes` and, for bulk reads, `maxBytes`);
   * `probe`: waits for a message without a buffer (see the class notes).
   */
  constructor(conn: Readable, maxBytes = 65536, minBytes = Math.min(4096, maxBytes), probe = false) {
    this.#readOnce = readOnceFor(conn);
    this.#min = minBytes;
    this.#max = maxBytes;
    this.#probe = probe;
  }

  /**
   * Bytes that arrived before this reader took over the connection (read past
   * a PROXY protocol header): the next calls return them first. Only before
   * the first read.
   */
  preload(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    if (this.#buf !== null || this.#pending !== null) throw new Error("preload() after the first read");
    this.#buf = bytes.length <= this.#min ? this.#smallBuffer() : takeBuffer(bytes.length);
    this.#buf.set(bytes);
    this.#start = 0;
    this.#end = bytes.length;
  }

  /** True while a read started by {@link prefetch} has not been taken by {@link next}. */
  get reading(): boolean {
    return this.#pending !== null;
  }

  /** Bytes buffered and not yet consumed. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Returns the next bytes (buffered first, else one read), or null at EOF. */
  async next(): Promise<Uint8Array | null> {
    if (this.#end > this.#start) return this.#buffered();
    if (this.eof) return null;
    let n: number | null;
    try {
      n = await this.#read();
    } catch (error) {
      return this.#failed(error);
    }
    return this.#accept(n);
  }

  /**
   * Like {@link next}, for the start of a message: with `probe`, a wait that
   * starts here holds no buffer until the first byte arrives.
   */
  nextMessage(): Promise<Uint8Array | null> {
    if (!this.#probe || this.#end > this.#start || this.eof) return this.next();
    // No async frame and one callback pair: an idle connection waits in as few objects as possible.
    const pending = this.#pending;
    this.#pending = null;
    if (pending !== null) return pending.then((n) => this.#accept(n), (error) => this.#failed(error));
    const slot = this.#slotStart();
    return this.#readOnce(slot).then(
      (n) => this.#accept(this.#slotLanded(slot, n)),
      (error) => this.#slotFailed(slot, error),
    );
  }

  #failed(error: unknown): never {
    this.#inFlight = false;
    throw error;
  }

  /**
   * A wait in a slot of a shared slab starts (one byte before the first message,
   * 512 after): the reader's buffers are given back first, nothing of them is in
   * use between messages. Returns the slot to read into.
   */
  #slotStart(): Uint8Array {
    this.#giveBorrowed();
    if (this.#small !== null) giveBuffer(this.#small);
    this.#buf = this.#small = this.#last = null;
    this.#start = this.#end = 0;
    this.#want = 0;
    this.#inFlight = true;
    return takeSlot(this.consumed === 0 ? FIRST_SLOT_BYTES : Math.min(IDLE_SLOT_BYTES, this.#min));
  }

  /**
   * The slot's read is done: its bytes go into the small buffer, taken now, and
   * are handed out at once. The count of bytes in `#buf` (from 0), or null at EOF.
   * A full slot is not followed by a read here: the peer may have sent exactly that
   * much and be waiting for an answer (the caller's next read takes what follows).
   */
  #slotLanded(slot: Uint8Array, n: number | null): number | null {
    giveSlot(slot);
    if (n === null || n === 0) return null;
    (this.#buf = this.#smallBuffer()).set(n === slot.length ? slot : slot.subarray(0, n));
    return n;
  }

  #slotFailed(slot: Uint8Array, error: unknown): never {
    giveSlot(slot);
    return this.#failed(error);
  }

  /** A wait in a slot, for {@link prefetch}: resolves to the count of bytes in `#buf`. */
  #slotRead(): Promise<number | null> {
    const slot = this.#slotStart();
    // A failure stays in flight until next() takes it (it clears the flag then).
    return this.#readOnce(slot).then((n) => this.#slotLanded(slot, n), (error) => {
      giveSlot(slot);
      throw error;
    });
  }

  /** The unconsumed buffered bytes, consumed (a view valid until the next read). */
  #buffered(): Uint8Array {
    const chunk = this.#buf!.subarray(this.#start, this.#end);
    this.consumed += this.#end - this.#start;
    this.#start = this.#end;
    this.#last = chunk;
    return chunk;
  }

  /** The read in flight (one started by {@link prefetch}), or a new one. */
  #read(): Promise<number | null> {
    const pending = this.#pending;
    if (pending !== null) {
      this.#pending = null;
      return pending;
    }
    // Nothing is buffered and the last chunk is consumed: the buffer may change now.
    if (this.#want > 0) {
      this.#giveBorrowed();
      this.#buf = takeBuffer(this.#want);
    } else if (this.#want < 0) this.#returnLarge();
    this.#want = 0;
    this.#buf ??= this.#smallBuffer();
    this.#inFlight = true;
    return this.#readOnce(this.#buf);
  }

  /** Gives a borrowed large buffer back and goes back to the small one. */
  #returnLarge(): void {
    this.#giveBorrowed();
    this.#buf = this.#smallBuffer();
  }

  /** Gives the current buffer back to the spare list if it is a borrowed one. */
  #giveBorrowed(): void {
    if (this.#buf !== null && this.#buf !== this.#small) giveBuffer(this.#buf);
  }

  #smallBuffer(): Uint8Array {
    return this.#small ??= takeBuffer(this.#min);
  }

  /**
   * Gives the buffers back for other connections once the connection is closed
   * and no read into them can still be in flight (a read left pending by
   * {@link prefetch} keeps them: it settles after the close). Reading after this
   * starts over with a fresh buffer.
   */
  dispose(): void {
    if (this.#pending !== null || this.#inFlight) return;
    this.#giveBorrowed();
    if (this.#small !== null) giveBuffer(this.#small);
    this.#buf = this.#small = this.#last = null;
    this.#start = this.#end = 0;
    this.#want = 0;
  }

  /** Takes in the result of a read: the bytes read, or null at EOF (0 from the runtime's op). */
  #accept(n: number | null): Uint8Array | null {
    this.#inFlight = false;
    const buf = this.#buf!;
    if (n === null || n === 0) {
      this.eof = true;
      this.#last = null;
      return null;
    }
    this.#start = this.#end = n;
    this.consumed += n;
    const chunk = buf.subarray(0, n);
    this.#last = chunk;
    // A full small buffer means a bulk transfer: the next read borrows a large buffer.
    // Reads coming in small again give it back. (The switch waits for the next read:
    // this chunk is a view into the current buffer.)
    if (n === buf.length && n < this.#max) this.#want = n < MID_BYTES && MID_BYTES < this.#max ? MID_BYTES : this.#max;
    else if (n < buf.length >> 4 && buf !== this.#small) this.#want = -1;
    return chunk;
  }

  /**
   * Starts the next read now and returns it; {@link next} continues it instead of
   * starting another. Used on idle pooled connections: whatever arrives while no
   * request is outstanding (late bytes, EOF, reset) settles it and shows that the
   * connection must not be reused.
   *
   * `atBoundary`: the previous message is done with (no chunk of it still in use),
   * so a `probe` reader may wait without a buffer. False for a read started while
   * a message may still be read (a reset watch during a hook): it reads into the
   * current buffer.
   *
   * The promise settles with a byte count that only says the read is done: 0 or
   * null at EOF, and callers take the bytes (or the EOF) with {@link next}.
   */
  prefetch(atBoundary = true): Promise<number | null> {
    if (this.#pending !== null) return this.#pending;
    if (this.#end > this.#start || this.eof) return Promise.resolve(this.#end - this.#start);
    // A second read into the buffer a next() is reading into would corrupt both.
    if (this.#inFlight) throw new Error("ConnReader.prefetch() while a read is in flight");
    if (this.#probe && atBoundary) return this.#pending = this.#slotRead();
    // An idle connection holds only its small buffer (a borrowed large one goes back).
    this.#returnLarge();
    this.#want = 0;
    this.#inFlight = true;
    this.#pending = this.#readOnce(this.#buf!);
    return this.#pending;
  }

  /** Gives back the last `count` bytes of the chunk last returned by {@link next}. */
  unread(count: number): void {
    if (count <= 0) return;
    if (this.#last === null || count > this.#last.length) throw new RangeError("Cannot unread more than was read");
    this.#start -= count;
    this.consumed -= count;
    this.#last = null;
  }

  /**
   * Consumes and returns exactly `count` buffered bytes (a view valid until the
   * next read), or null when fewer are buffered. Used to send a small body in
   * the same write as its head.
   */
  take(count: number): Uint8Array | null {
    if (this.#end - this.#start < count) return null;
    const view = this.#buf!.subarray(this.#start, this.#start + count);
    this.#start += count;
    this.consumed += count;
    this.#last = null;
    return view;
  }

  /** A view of the buffered, unconsumed bytes (valid until the next read). */
  peek(): Uint8Array {
    return this.#buf === null ? EMPTY : this.#buf.subarray(this.#start, this.#end);
  }

  /**
   * Feeds bytes to `parser` until its head is complete; unreads what follows.
   * Returns false if the peer closed before sending any byte of the head.
   *
   * @throws {PrematureEofError} when the peer closes mid-head.
   */
  async readHead(parser: HeadParser): Promise<boolean> {
    while (true) {
      // (next() inlined: one async frame less per head)
      let chunk: Uint8Array | null;
      if (this.#end > this.#start) chunk = this.#buffered();
      else if (this.eof) chunk = null;
      else {
        let n: number | null;
        try {
          n = await this.#read();
        } catch (error) {
          this.#inFlight = false;
          throw error;
        }
        chunk = this.#accept(n);
      }
      if (chunk === null) {
        if (parser.started) throw new PrematureEofError("Connection closed before the head was complete");
        return false;
      }
      const used = parser.push(chunk);
      if (parser.complete) {
        this.unread(chunk.length - used);
        return true;
      }
    }
  }
}

/** A body being read: `next()` returns data views, or null at the body's end. */
export interface BodyReader {
  /** The next piece of body data (valid until the next call), or null when complete. */
  next(): Promise<Uint8Array | null>;
  /** True when the body has been read to its end. */
  readonly done: boolean;
  /** Trailer fields of a chunked body (after `done`). */
  readonly trailers: readonly [string, string][];
}

const EMPTY = new Uint8Array(0);
const NO_TRAILERS: readonly [string, string][] = Object.freeze([]) as readonly [string, string][];

class EmptyBody implements BodyReader {
  readonly done = true;
  readonly trailers = NO_TRAILERS;
  next(): Promise<Uint8Array | null> {
    return Promise.resolve(null);
  }
}

class LengthBody implements BodyReader {
  readonly trailers = NO_TRAILERS;
  #remaining: number;
  constructor(readonly reader: ConnReader, length: number) {
    this.#remaining = length;
  }
  get done(): boolean {
    return this.#remaining === 0;
  }
  async next(): Promise<Uint8Array | null> {
    if (this.#remaining === 0) return null;
    const chunk = await this.reader.next();
    if (chunk === null) throw new PrematureEofError("Connection closed before the body was complete");
    if (chunk.length > this.#remaining) {
      this.reader.unread(chunk.length - this.#remaining);
      const piece = chunk.subarray(0, this.#remaining);
      this.#remaining = 0;
      return piece;
    }
    this.#remaining -= chunk.length;
    return chunk;
  }
}

/** Pieces smaller than this are gathered with the chunks buffered after them. */
const GATHER_BELOW = 4096;
const GATHER_BYTES = 16384;

class ChunkedBody implements BodyReader {
  readonly #decoder: ChunkedDecoder;
  #gather: Uint8Array | null = null;
  #pending: unknown = null;
  constructor(readonly reader: ConnReader, limits?: ChunkedLimits) {
    this.#decoder = new ChunkedDecoder(limits);
  }
  get done(): boolean {
    return this.#decoder.done;
  }
  get trailers(): readonly [string, string][] {
    return this.#decoder.trailers;
  }
  async next(): Promise<Uint8Array | null> {
    if (this.#pending !== null) {
      const error = this.#pending;
      this.#pending = null;
      throw error;
    }
    const first = await this.#piece(Infinity);
    if (first === null || first.length >= GATHER_BELOW || this.reader.buffered === 0) return first;
    // Many small chunks (down to one-byte chunks) must not cost one write each on
    // the other side: gather what is already buffered into one piece, without
    // waiting for the network.
    const out = this.#gather ??= new Uint8Array(GATHER_BYTES);
    out.set(first);
    let length = first.length;
    try {
      while (length < GATHER_BYTES) {
        const piece = this.#pieceBuffered(GATHER_BYTES - length);
        if (piece === null) break;
        out.set(piece, length);
        length += piece.length;
      }
    } catch (error) {
      this.#pending = error; // deliver what was decoded first; the error comes next
    }
    return out.subarray(0, length);
  }
  /** The next data piece, reading from the connection as needed. */
  async #piece(max: number): Promise<Uint8Array | null> {
    const dec = this.#decoder;
    while (!dec.done) {
      const chunk = await this.reader.next();
      if (chunk === null) throw new PrematureEofError("Connection closed before the chunked body was complete");
      const used = dec.step(chunk, max);
      this.reader.unread(chunk.length - used);
      if (dec.data !== null && dec.data.length > 0) return dec.data;
    }
    return null;
  }

  /** The next data piece from bytes already buffered (synchronous), or null. */
  #pieceBuffered(max: number): Uint8Array | null {
    const dec = this.#decoder;
    while (!dec.done) {
      const input = this.reader.peek();
      if (input.length === 0) return null;
      const used = dec.step(input, max);
      this.reader.take(used);
      if (dec.data !== null && dec.data.length > 0) return dec.data;
      if (used === 0) return null;
    }
    return null;
  }
}

class CloseDelimitedBody implements BodyReader {
  readonly trailers = NO_TRAILERS;
  done = false;
  constructor(readonly reader: ConnReader) {}
  async next(): Promise<Uint8Array | null> {
    if (this.done) return null;
    const chunk = await this.reader.next();
    if (chunk === null) this.done = true;
    return chunk;
  }
}

/**
 * Decodes a chunked body that is already entirely buffered, consuming it.
 * Returns null (consuming nothing) when the body continues past the buffer or
 * decodes to more than `maxBytes`.
 *
 * @throws {ParseError} when the buffered bytes are not valid chunked framing.
 */
export function takeBufferedChunked(
  reader: ConnReader,
  maxBytes: number,
  limits?: ChunkedLimits,
): { data: Uint8Array; trailers: readonly [string, string][] } | null {
  const input = reader.peek();
  if (input.length === 0) return null;
  const dec = new ChunkedDecoder(limits);
  const out = new Uint8Array(Math.min(input.length, maxBytes));
  let length = 0;
  let used = 0;
  while (used < input.length && !dec.done) {
    const n = dec.step(input.subarray(used), out.length - length);
    if (n === 0) return null; // more data than maxBytes: the streaming path takes it from the start
    used += n;
    if (dec.data !== null) {
      out.set(dec.data, length);
      length += dec.data.length;
    }
  }
  if (!dec.done) return null;
  reader.take(used);
  return { data: out.subarray(0, length), trailers: dec.trailers };
}

/** A body reader for a message without a body (shared: it holds no state). */
export const EMPTY_BODY: BodyReader = Object.freeze(new EmptyBody());

/** The body reader for a framing, reading from `reader`. */
export function bodyReader(reader: ConnReader, framing: Framing, limits?: ChunkedLimits): BodyReader {
  switch (framing.kind) {
    case "none":
      return new EmptyBody();
    case "length":
      return framing.length === 0 ? new EmptyBody() : new LengthBody(reader, framing.length);
    case "chunked":
      return new ChunkedBody(reader, limits);
    case "close":
      return new CloseDelimitedBody(reader);
  }
}
