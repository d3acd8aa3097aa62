/**
 * What hooks see of a message: a live `Headers` view over an ordered field
 * list, the field validation that runs before anything a hook touched is
 * serialised, and the body a hook may read, replace or transform.
 *
 * A hook can never inject a header line or smuggle a second message: names must
 * be tokens and values free of CR, LF, NUL and other controls (checked when set
 * through `headers`, and again for the whole list before serialising, since
 * `fields` is a plain array), and framing is always chosen by the proxy.
 *
 * @module
 */
import { FIELD_VALUE, isToken } from "./ascii.ts";
import { BodyTooLargeError } from "./hooks.ts";
import { type Field, isHopByHopOrLength, nameIs } from "./fields.ts";
import type { BodyReader } from "./reader.ts";

/** The default cap of `text()` / `bytes()`. */
export const DEFAULT_BODY_CAP_BYTES = 1024 * 1024;

/** Whether a field value can be written as one field line (latin-1, no CTL but HTAB). */
export function isValidFieldValue(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c > 0xff || FIELD_VALUE[c] === 0) return false;
  }
  return true;
}

/**
 * Checks a field list a hook may have edited: every entry a `[name, value]`
 * pair of strings, the name a token, the value a valid field value (RFC 9110
 * §5.1, §5.5). Returns the first bad entry's index, or -1 when all are valid.
 */
export function findInvalidField(fields: readonly unknown[]): number {
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i];
    if (!Array.isArray(f) || f.length !== 2 || typeof f[0] !== "string" || typeof f[1] !== "string") return i;
    if (!isToken(f[0]) || !isValidFieldValue(f[1])) return i;
  }
  return -1;
}

/** Trims leading and trailing HTTP whitespace (SP, HTAB, CR, LF), as `Headers` does. */
function normalizeValue(value: string): string {
  return String(value).replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, "");
}

function checkName(name: string): string {
  name = String(name);
  if (!isToken(name)) throw new TypeError(`Invalid header name: ${JSON.stringify(name)}`);
  return name;
}

function checkValue(value: string): string {
  const v = normalizeValue(value);
  if (!isValidFieldValue(v)) {
    throw new TypeError("Invalid header value: CR, LF, NUL and other controls are not allowed");
  }
  return v;
}

/**
 * A `Headers` that reads and writes an ordered field list in place: `set`
 * replaces the first field of that name where it stands and removes the others,
 * `append` adds at the end, names keep the case they were given. Iteration
 * follows the web `Headers` rules (lower-case names, sorted, values combined,
 * `set-cookie` one by one).
 */
export class FieldsHeaders implements Headers {
  readonly #fields: Field[];
  /**
   * Set once an edit named a field the proxy manages (hop-by-hop and framing
   * fields, `Host`, `Trailer`): the list then needs the full check before it is
   * sent. Other edits are valid by construction (checked here).
   */
  managedEdited = false;
  /** Wraps `fields` (not copied: edits show in both). */
  constructor(fields: Field[]) {
    this.#fields = fields;
  }

  #note(name: string): void {
    if (isHopByHopOrLength(name) || nameIs(name, "host") || nameIs(name, "trailer")) this.managedEdited = true;
  }

  /** Adds a field at the end. */
  append(name: string, value: string): void {
    name = checkName(name);
    this.#note(name);
    this.#fields.push([name, checkValue(value)]);
  }

  /** Removes every field called `name`. */
  delete(name: string): void {
    this.#note(name);
    const lower = checkName(name).toLowerCase();
    const fields = this.#fields;
    for (let i = fields.length - 1; i >= 0; i--) if (nameIs(fields[i][0], lower)) fields.splice(i, 1);
  }

  /** The values of every field called `name`, joined with ", "; null when there is none. */
  get(name: string): string | null {
    const lower = checkName(name).toLowerCase();
    let out: string | null = null;
    for (const [n, v] of this.#fields) if (nameIs(n, lower)) out = out === null ? v : `${out}, ${v}`;
    return out;
  }

  /** Every `Set-Cookie` value, one entry each. */
  getSetCookie(): string[] {
    const out: string[] = [];
    for (const [n, v] of this.#fields) if (nameIs(n, "set-cookie")) out.push(v);
    return out;
  }

  /** Whether a field called `name` is present. */
  has(name: string): boolean {
    const lower = checkName(name).toLowerCase();
    for (const [n] of this.#fields) if (nameIs(n, lower)) return true;
    return false;
  }

  /** Sets `name` to `value`: the first such field keeps its place, the others go. */
  set(name: string, value: string): void {
    name = checkName(name);
    value = checkValue(value);
    this.#note(name);
    const lower = name.toLowerCase();
    const fields = this.#fields;
    let first = -1;
    for (let i = 0; i < fields.length; i++) {
      if (!nameIs(fields[i][0], lower)) continue;
      if (first === -1) {
        first = i;
        fields[i] = [fields[i][0], value];
      } else {
        fields.splice(i--, 1);
      }
    }
    if (first === -1) fields.push([name, value]);
  }

  /** Calls `callback` for each entry, as `Headers.forEach` does. */
  forEach(callback: (value: string, key: string, parent: this) => void, thisArg?: unknown): void {
    for (const [k, v] of this.#sorted()) callback.call(thisArg, v, k, this);
  }

  #sorted(): [string, string][] {
    const combined = new Map<string, string>();
    const cookies: string[] = [];
    for (const [n, v] of this.#fields) {
      const lower = n.toLowerCase();
      if (lower === "set-cookie") cookies.push(v);
      else combined.set(lower, combined.has(lower) ? `${combined.get(lower)}, ${v}` : v);
    }
    const out: [string, string][] = [...combined];
    for (const c of cookies) out.push(["set-cookie", c]);
    out.sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
    return out;
  }

  /** Entries as `[lower-case name, value]`. */
  entries(): ReturnType<Headers["entries"]> {
    return this.#sorted()[Symbol.iterator]() as unknown as ReturnType<Headers["entries"]>;
  }

  /** Lower-case names. */
  keys(): ReturnType<Headers["keys"]> {
    return this.#sorted().map(([k]) => k)[Symbol.iterator]() as unknown as ReturnType<Headers["keys"]>;
  }

  /** Values. */
  values(): ReturnType<Headers["values"]> {
    return this.#sorted().map(([, v]) => v)[Symbol.iterator]() as unknown as ReturnType<Headers["values"]>;
  }

  /** Same as {@link FieldsHeaders.entries}. */
  [Symbol.iterator](): ReturnType<Headers["entries"]> {
    return this.entries();
  }
}

/** A read-only `Headers` copy of a field list. */
export function headersOf(fields: readonly Field[]): Headers {
  const h = new Headers();
  for (const [n, v] of fields) {
    try {
      h.append(n, v);
    } catch {
      // obs-text values the web Headers class refuses are left out of the copy.
    }
  }
  return h;
}

/** Body source that reads a `ReadableStream` as a {@link BodyReader}. */
export class StreamBody implements BodyReader {
  done = false;
  readonly trailers: readonly [string, string][] = [];
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #wrap: (error: unknown) => unknown;
  #cancelled = false;
  /** Reads `stream`; errors it raises are mapped by `wrapError` (for example to a hook error). */
  constructor(stream: ReadableStream<Uint8Array>, wrapError: (error: unknown) => unknown) {
    this.#reader = stream.getReader();
    this.#wrap = wrapError;
  }
  /** The next piece, or null at the end. */
  async next(): Promise<Uint8Array | null> {
    if (this.done) return null;
    let r: ReadableStreamReadResult<Uint8Array>;
    try {
      r = await this.#reader.read();
    } catch (error) {
      this.done = true;
      throw this.#wrap(error);
    }
    if (r.done) {
      this.done = true;
      if (this.#cancelled) throw this.#wrap(new Error("The body stream was cancelled"));
      return null;
    }
    if (!(r.value instanceof Uint8Array)) {
      this.done = true;
      this.cancel();
      throw this.#wrap(new TypeError("A body stream must yield Uint8Array chunks"));
    }
    return r.value;
  }
  /**
   * Stops reading (the stream's source is cancelled). A read waiting on the
   * stream then fails: a cancelled body never looks complete.
   */
  cancel(): void {
    this.#cancelled = true;
    this.done = true;
    this.#reader.cancel().catch(() => {
      // The stream already failed; nothing more to stop.
    });
  }
}

/** What to send as a body once hooks are done with it. */
export type BodySource =
  | { kind: "wire" }
  | { kind: "bytes"; data: Uint8Array }
  | { kind: "stream"; stream: ReadableStream<Uint8Array> };

const encoder = new TextEncoder();

/**
 * The body of a message as hooks see it: the original bytes on the wire until
 * a hook reads, replaces or transforms it. Reading (`bytes()`, `text()`) keeps
 * the body for forwarding; `setBody` leaves the original unread (the owner
 * drains or abandons it: {@link MessageBody.orphan}).
 */
export class MessageBody {
  #wire: BodyReader;
  #source: BodySource = { kind: "wire" };
  #orphan: BodyReader | null = null;
  #sealed: string | null = null;
  readonly #tooLarge: (cap: number) => Error;
  /** Returns why this message may not carry a body, or null when it may. */
  readonly #noBody: () => string | null;

  /** Wraps the original body (`wire`, read as it arrives). */
  constructor(
    wire: BodyReader,
    options: {
      tooLarge: (cap: number) => Error;
      noBody?: () => string | null;
      initial?: BodySource;
      /** Runs once before the first read of the wire body (a 100 Continue for a waiting client). */
      beforeRead?: () => Promise<void>;
    },
  ) {
    this.#wire = options.beforeRead ? readsAfter(wire, options.beforeRead) : wire;
    if (options.initial !== undefined) this.#source = options.initial;
    this.#tooLarge = options.tooLarge;
    this.#noBody = options.noBody ?? (() => null);
  }

  /** Whether a hook changed the body (the proxy then re-frames it). */
  get modified(): boolean {
    return this.#source.kind !== "wire";
  }

  /** The body to send. */
  get source(): BodySource {
    return this.#source;
  }

  /** The original body on the wire (read or not). */
  get wire(): BodyReader {
    return this.#wire;
  }

  /** The original body if it was replaced before being read to its end (still on the wire). */
  get orphan(): BodyReader | null {
    return this.#orphan;
  }

  /** After this, body methods fail with `why` (the body has been sent). */
  seal(why: string): void {
    this.#sealed = why;
  }

  #check(): void {
    if (this.#sealed !== null) throw new TypeError(this.#sealed);
  }

  /** Reads the whole body, up to `maxBytes`. */
  async bytes(maxBytes = DEFAULT_BODY_CAP_BYTES): Promise<Uint8Array> {
    this.#check();
    const src = this.#source;
    if (src.kind === "bytes") {
      if (src.data.length > maxBytes) throw this.#tooLarge(maxBytes);
      return src.data;
    }
    const parts: Uint8Array[] = [];
    let length = 0;
    // Over the cap, nothing is lost: the body becomes what was read followed by the rest,
    // streamed (the hook may catch the error and let the exchange go on).
    const overflow = (next: () => Promise<Uint8Array | null>, cancel: () => void): never => {
      this.#source = { kind: "stream", stream: replayThenRest(parts, next, cancel) };
      throw this.#tooLarge(maxBytes);
    };
    if (src.kind === "wire") {
      const wire = this.#wire;
      while (true) {
        const piece = await wire.next();
        if (piece === null) break;
        parts.push(piece.slice()); // a wire piece is a view valid until the next read
        length += piece.length;
        if (length > maxBytes) overflow(() => wire.next().then((p) => p?.slice() ?? null), () => {});
      }
    } else {
      const reader = src.stream.getReader();
      const next = async () => {
        const r = await reader.read();
        if (r.done) return null;
        if (!(r.value instanceof Uint8Array)) throw new TypeError("A body stream must yield Uint8Array chunks");
        return r.value;
      };
      const cancel = () => {
        reader.cancel().catch(() => {
          // Cancelling a stream that already failed has nothing left to stop.
        });
      };
      try {
        while (true) {
          const piece = await next();
          if (piece === null) break;
          parts.push(piece);
          length += piece.length;
          if (length > maxBytes) break;
        }
      } catch (error) {
        cancel();
        throw error;
      }
      if (length > maxBytes) overflow(next, cancel);
    }
    const data = parts.length === 1 ? parts[0] : concatBytes(parts, length);
    this.#source = { kind: "bytes", data };
    return data;
  }

  /** Reads the whole body as UTF-8 text, up to `maxBytes`. */
  async text(maxBytes = DEFAULT_BODY_CAP_BYTES): Promise<string> {
    return new TextDecoder().decode(await this.bytes(maxBytes));
  }

  /** Replaces the body. */
  setBody(body: string | Uint8Array | ReadableStream<Uint8Array> | null): void {
    this.#check();
    const why = this.#noBody();
    if (why !== null && !(body === null || body === "" || (body instanceof Uint8Array && body.length === 0))) {
      throw new TypeError(why);
    }
    if (this.#source.kind === "wire" && !this.#wire.done) this.#orphan = this.#wire;
    if (body === null) this.#source = { kind: "bytes", data: new Uint8Array(0) };
    else if (typeof body === "string") this.#source = { kind: "bytes", data: encoder.encode(body) };
    else if (body instanceof Uint8Array) this.#source = { kind: "bytes", data: body };
    else if (body instanceof ReadableStream) this.#source = { kind: "stream", stream: body };
    else throw new TypeError("A body must be a string, a Uint8Array, a ReadableStream or null");
  }

  /** Streams the current body through `transform`. */
  pipeThrough(transform: TransformStream<Uint8Array, Uint8Array>): void {
    this.#check();
    const why = this.#noBody();
    if (why !== null) throw new TypeError(why);
    this.#source = { kind: "stream", stream: this.#currentStream().pipeThrough(transform) };
  }

  #currentStream(): ReadableStream<Uint8Array> {
    const src = this.#source;
    if (src.kind === "stream") return src.stream;
    if (src.kind === "bytes") {
      const data = src.data;
      return new ReadableStream<Uint8Array>({
        start(controller) {
          if (data.length > 0) controller.enqueue(data);
          controller.close();
        },
      });
    }
    const wire = this.#wire;
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        const piece = await wire.next();
        if (piece === null) controller.close();
        else controller.enqueue(piece.slice()); // the view is only valid until the next read
      },
    }, { highWaterMark: 0 });
  }
}

/** `wire` with `first` awaited once before its first read. */
function readsAfter(wire: BodyReader, first: () => Promise<void>): BodyReader {
  let before: Promise<void> | null = null;
  return {
    get done() {
      return wire.done;
    },
    get trailers() {
      return wire.trailers;
    },
    async next() {
      await (before ??= first());
      return wire.next();
    },
  };
}

/** A stream of `parts` (already read), then of what `next` reads. */
function replayThenRest(
  parts: Uint8Array[],
  next: () => Promise<Uint8Array | null>,
  cancel: () => void,
): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (i < parts.length) {
        controller.enqueue(parts[i++]);
        return;
      }
      const piece = await next();
      if (piece === null) controller.close();
      else controller.enqueue(piece);
    },
    cancel,
  }, { highWaterMark: 0 });
}

function concatBytes(parts: readonly Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A 413 (request) or 502 (response) for a body over a `text()`/`bytes()` cap. */
export function bodyTooLarge(kind: "request" | "response"): (cap: number) => Error {
  return (cap) =>
    new BodyTooLargeError(
      `The ${kind} body is larger than the ${cap} bytes a hook asked to read`,
      kind === "request" ? 413 : 502,
    );
}
