/**
 * End-to-end test helpers: a scripted raw-TCP origin that records the exact
 * bytes it receives, a raw client with bounded reads, a small independent
 * HTTP/1.1 message reader (deliberately not the proxy's own parser), and a
 * proxy started on port 0.
 *
 * Every helper owns what it opens and closes it in `close()` /
 * `[Symbol.asyncDispose]`, so tests can use `await using` and run under
 * `--sanitize-ops --sanitize-resources`. No helper sleeps: reads finish on
 * bytes, EOF or a deadline that closes the socket.
 *
 * @module
 */
import assert from "node:assert/strict";
import { type ProxyHandle, type ProxyOptions, silentLogger, startProxy } from "../mod.ts";

/** One field line as received: name (case kept) and value (OWS trimmed). */
export type Field = [name: string, value: string];

const EMPTY = new Uint8Array(0);
const CRLF = latin1("\r\n");
const CRLFCRLF = latin1("\r\n\r\n");
/** Default bound on any single wait for bytes; a test that waits longer fails instead of hanging. */
export const DEFAULT_TIMEOUT_MS = 5000;

/** Encodes a string byte-for-byte (latin-1; every char must be < 256). */
export function latin1(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw new RangeError(`latin1: char ${c} at ${i} does not fit in a byte`);
    out[i] = c;
  }
  return out;
}

/** Decodes bytes as latin-1 (one char per byte), so any byte survives a round trip. */
export function text(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    s += String.fromCharCode(...bytes.subarray(i, Math.min(i + 8192, bytes.length)));
  }
  return s;
}

/** Concatenates byte arrays. */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function toBytes(data: string | Uint8Array): Uint8Array {
  return typeof data === "string" ? latin1(data) : data;
}

function indexOf(hay: Uint8Array, needle: Uint8Array, from: number): number {
  const last = hay.length - needle.length;
  outer: for (let i = Math.max(0, from); i <= last; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** Deterministic pseudo-random bytes (xorshift32) for bodies that cover every byte value. */
export function pseudoRandomBytes(length: number, seed = 0x9e3779b9): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** All values of a field, compared case-insensitively. */
export function fieldValues(fields: readonly Field[], name: string): string[] {
  const lower = name.toLowerCase();
  return fields.filter((f) => f[0].toLowerCase() === lower).map((f) => f[1]);
}

/** The one value of a field; fails unless it appears exactly once. */
export function fieldValue(fields: readonly Field[], name: string): string {
  const values = fieldValues(fields, name);
  assert.equal(values.length, 1, `expected exactly one ${name} field, got ${JSON.stringify(values)}`);
  return values[0];
}

/** Whether a field is present. */
export function hasField(fields: readonly Field[], name: string): boolean {
  return fieldValues(fields, name).length > 0;
}

/** The comma-separated elements of every value of a list field, trimmed and lower-cased. */
export function listTokens(fields: readonly Field[], name: string): string[] {
  return fieldValues(fields, name).flatMap((v) => v.split(",")).map((t) => t.trim().toLowerCase()).filter((t) =>
    t !== ""
  );
}

/** Fields without those named (case-insensitive). */
export function withoutFields(fields: readonly Field[], ...names: string[]): Field[] {
  const drop = new Set(names.map((n) => n.toLowerCase()));
  return fields.filter((f) => !drop.has(f[0].toLowerCase()));
}

/** A one-shot promise with its resolvers, for ordering steps without sleeping. */
export function deferred<T = void>(): PromiseWithResolvers<T> {
  return Promise.withResolvers<T>();
}

/** Thrown when a bounded wait for bytes expires (the socket is then closed). */
export class DeadlineError extends Error {
  /** Creates the error. */
  constructor(ms: number, what: string) {
    super(`No bytes within ${ms} ms while ${what}`);
    this.name = "DeadlineError";
  }
}

/**
 * A buffered reader over one connection. Every byte read is recorded. Each
 * read waits at most `timeoutMs`; when that expires the connection is closed
 * and {@link DeadlineError} is thrown, so a test can never hang on a read.
 */
export class WireReader {
  /** Longest wait for one read, in ms. */
  timeoutMs: number;
  /** True once the peer closed its sending side (or reset, or we closed). */
  eof = false;
  /** True when the end came as a TCP reset rather than a FIN. */
  reset = false;
  readonly #conn: Deno.Conn;
  readonly #log: Uint8Array[] = [];
  #pending: Uint8Array = EMPTY;
  #closed = false;

  /** Wraps a connection. */
  constructor(conn: Deno.Conn, timeoutMs = DEFAULT_TIMEOUT_MS) {
    this.#conn = conn;
    this.timeoutMs = timeoutMs;
  }

  /** Every byte received so far, in order. */
  get received(): Uint8Array {
    return concat(this.#log);
  }

  /** Bytes received and not consumed yet. */
  get pending(): Uint8Array {
    return this.#pending;
  }

  /** Marks the connection as closed by us, so a failing pending read means EOF. */
  markClosed(): void {
    this.#closed = true;
  }

  /** Reads once (at most `max` bytes); false at EOF. */
  async fill(max = 65536, what = "reading"): Promise<boolean> {
    if (this.eof) return false;
    const buf = new Uint8Array(max);
    const read = this.#conn.read(buf);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<"deadline">((resolve) =>
      timer = setTimeout(() => resolve("deadline"), this.timeoutMs)
    );
    let n: number | null | "deadline";
    try {
      n = await Promise.race([read, deadline]);
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.ConnectionAborted) {
        this.reset = true;
        this.eof = true;
        return false;
      }
      // Our own close() while a read was pending: that is the end of the stream.
      if (this.#closed) {
        this.eof = true;
        return false;
      }
      throw error;
    } finally {
      clearTimeout(timer);
    }
    if (n === "deadline") {
      this.#closed = true;
      try {
        this.#conn.close();
      } catch {
        // Already closed by a concurrent close(); the pending read fails either way.
      }
      // The read rejects now that its resource is gone; wait for it so no op leaks.
      await read.catch(() => {});
      this.eof = true;
      throw new DeadlineError(this.timeoutMs, what);
    }
    if (n === null) {
      this.eof = true;
      return false;
    }
    const chunk = buf.slice(0, n);
    this.#log.push(chunk);
    this.#pending = this.#pending.length === 0 ? chunk : concat([this.#pending, chunk]);
    return true;
  }

  /** Takes `n` pending bytes. */
  #take(n: number): Uint8Array {
    const out = this.#pending.subarray(0, n);
    this.#pending = this.#pending.subarray(n);
    return out;
  }

  /**
   * Reads up to and including `marker`; null at EOF before it (the partial
   * bytes stay in {@link pending}).
   */
  async readUntil(marker: Uint8Array | string, what = "waiting for a delimiter"): Promise<Uint8Array | null> {
    const m = toBytes(marker);
    let from = 0;
    while (true) {
      const at = indexOf(this.#pending, m, from);
      if (at !== -1) return this.#take(at + m.length);
      from = Math.max(0, this.#pending.length - m.length + 1);
      if (!await this.fill(65536, what)) return null;
    }
  }

  /**
   * Reads exactly `n` bytes, or fewer at EOF. Socket reads never ask for more
   * than is still needed, so bytes past `n` stay in the kernel buffer.
   */
  async readExact(n: number, what = "reading a fixed number of bytes"): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    let have = 0;
    while (have < n) {
      if (this.#pending.length === 0 && !await this.fill(Math.min(65536, n - have), what)) break;
      const piece = this.#take(Math.min(this.#pending.length, n - have));
      parts.push(piece);
      have += piece.length;
    }
    return concat(parts);
  }

  /** Reads until EOF (FIN or reset) and returns every byte not consumed before. */
  async readToEnd(what = "waiting for the connection to close"): Promise<Uint8Array> {
    while (await this.fill(65536, what)) {
      // keep reading until EOF
    }
    return this.#take(this.#pending.length);
  }
}

/** An HTTP/1.x message as seen on the wire. */
export interface Message {
  /** The start line without CRLF. */
  startLine: string;
  /** The head exactly as received, including the final empty line. */
  headRaw: string;
  /** Field lines in order, case kept. */
  fields: Field[];
  /** `HTTP/x.y` of the start line. */
  version: string;
  /** Responses: status code (0 for requests). */
  status: number;
  /** Responses: reason phrase. */
  reason: string;
  /** Requests: method. */
  method: string;
  /** Requests: request-target. */
  target: string;
  /** How the body is delimited. */
  framing: "none" | "length" | "chunked" | "close";
  /** Decoded body. */
  body: Uint8Array;
  /** Body bytes exactly as on the wire (chunk framing and trailers included). */
  bodyRaw: Uint8Array;
  /** Trailer fields of a chunked body. */
  trailers: Field[];
  /** False when the connection ended before the body did. */
  complete: boolean;
}

function parseFieldLine(line: string): Field {
  const colon = line.indexOf(":");
  assert.ok(colon > 0, `field line without a colon: ${JSON.stringify(line)}`);
  return [line.slice(0, colon), line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "")];
}

/** Parses a head (start line, fields); the kind decides how the start line is read. */
export function parseHead(headRaw: string, kind: "request" | "response"): Message {
  const lines = headRaw.slice(0, -4).split("\r\n");
  const startLine = lines[0];
  const fields = lines.slice(1).map(parseFieldLine);
  const message: Message = {
    startLine,
    headRaw,
    fields,
    version: "",
    status: 0,
    reason: "",
    method: "",
    target: "",
    framing: "none",
    body: EMPTY,
    bodyRaw: EMPTY,
    trailers: [],
    complete: true,
  };
  if (kind === "response") {
    const m = /^(HTTP\/\d\.\d) (\d{3})(?: (.*))?$/.exec(startLine);
    assert.ok(m, `not a status line: ${JSON.stringify(startLine)}`);
    message.version = m[1];
    message.status = Number(m[2]);
    message.reason = m[3] ?? "";
  } else {
    const m = /^([^ ]+) ([^ ]+) (HTTP\/\d\.\d)$/.exec(startLine);
    assert.ok(m, `not a request line: ${JSON.stringify(startLine)}`);
    message.method = m[1];
    message.target = m[2];
    message.version = m[3];
  }
  return message;
}

/**
 * Reads one head. Returns null when the connection ends before any byte;
 * fails when it ends mid-head.
 */
export async function readHead(r: WireReader, kind: "request" | "response"): Promise<Message | null> {
  const head = await r.readUntil(CRLFCRLF, `reading a ${kind} head`);
  if (head === null) {
    assert.equal(r.pending.length, 0, `connection ended mid-head after ${JSON.stringify(text(r.pending))}`);
    return null;
  }
  const message = parseHead(text(head), kind);
  return message;
}

/** Decides the framing of a message (RFC 9112 §6.3) the simple way a test client would. */
function framingOf(m: Message, kind: "request" | "response", requestMethod: string): Message["framing"] {
  if (kind === "response") {
    if (requestMethod === "HEAD" || m.status < 200 || m.status === 204 || m.status === 304) return "none";
  }
  const te = listTokens(m.fields, "transfer-encoding");
  if (te.length > 0) return te[te.length - 1] === "chunked" ? "chunked" : "close";
  if (hasField(m.fields, "content-length")) return "length";
  return kind === "response" ? "close" : "none";
}

/** Reads the body of a message whose head was read by {@link readHead}. */
export async function readBody(
  r: WireReader,
  m: Message,
  kind: "request" | "response",
  requestMethod = "GET",
): Promise<Message> {
  m.framing = framingOf(m, kind, requestMethod);
  switch (m.framing) {
    case "none":
      return m;
    case "length": {
      const length = Number(fieldValues(m.fields, "content-length")[0].split(",")[0].trim());
      m.body = m.bodyRaw = await r.readExact(length, "reading a Content-Length body");
      m.complete = m.body.length === length;
      return m;
    }
    case "close":
      m.body = m.bodyRaw = await r.readToEnd("reading a close-delimited body");
      m.complete = true;
      return m;
    case "chunked":
      return await readChunked(r, m);
  }
}

async function readChunked(r: WireReader, m: Message): Promise<Message> {
  const raw: Uint8Array[] = [];
  const data: Uint8Array[] = [];
  m.complete = false;
  chunks: while (true) {
    const line = await r.readUntil(CRLF, "reading a chunk-size line");
    if (line === null) break;
    raw.push(line);
    const sizeText = text(line).slice(0, -2).split(";")[0].trim();
    assert.match(sizeText, /^[0-9A-Fa-f]+$/, `bad chunk-size line ${JSON.stringify(text(line))}`);
    const size = parseInt(sizeText, 16);
    if (size === 0) {
      while (true) {
        const t = await r.readUntil(CRLF, "reading the trailer section");
        if (t === null) break chunks;
        raw.push(t);
        if (t.length === 2) {
          m.complete = true;
          break chunks;
        }
        m.trailers.push(parseFieldLine(text(t).slice(0, -2)));
      }
    }
    const chunk = await r.readExact(size + 2, "reading chunk data");
    raw.push(chunk);
    if (chunk.length < size + 2) break;
    assert.equal(text(chunk.subarray(size)), "\r\n", "chunk data not followed by CRLF");
    data.push(chunk.subarray(0, size));
  }
  if (!m.complete && r.pending.length > 0) raw.push(r.pending);
  m.body = concat(data);
  m.bodyRaw = concat(raw);
  return m;
}

/** Decodes a complete chunked body held in memory (for checking what an origin received). */
export function decodeChunked(raw: Uint8Array): { body: Uint8Array; trailers: Field[]; complete: boolean } {
  const s = text(raw);
  const parts: Uint8Array[] = [];
  const trailers: Field[] = [];
  let at = 0;
  while (true) {
    const eol = s.indexOf("\r\n", at);
    if (eol === -1) return { body: concat(parts), trailers, complete: false };
    const size = parseInt(s.slice(at, eol).split(";")[0].trim(), 16);
    at = eol + 2;
    if (size === 0) {
      while (true) {
        const end = s.indexOf("\r\n", at);
        if (end === -1) return { body: concat(parts), trailers, complete: false };
        if (end === at) return { body: concat(parts), trailers, complete: true };
        trailers.push(parseFieldLine(s.slice(at, end)));
        at = end + 2;
      }
    }
    parts.push(raw.subarray(at, at + size));
    at += size + 2;
  }
}

// ---------------------------------------------------------------------------
// Scripted origin

/** One accepted origin connection, handed to the script. */
export class OriginConn {
  /** 0-based order of acceptance. */
  readonly index: number;
  /** The TCP connection. */
  readonly conn: Deno.TcpConn;
  /** Reader recording every byte received on this connection. */
  readonly reader: WireReader;
  readonly #origin: Origin;
  #closed = false;

  /** Wraps an accepted connection. */
  constructor(origin: Origin, index: number, conn: Deno.TcpConn) {
    this.#origin = origin;
    this.index = index;
    this.conn = conn;
    this.reader = new WireReader(conn);
  }

  /** Every byte received on this connection, as latin-1 text. */
  get receivedText(): string {
    return text(this.reader.received);
  }

  /** Reads a request head (no body); null at EOF before any byte. */
  async readHead(): Promise<Message | null> {
    const m = await readHead(this.reader, "request");
    if (m !== null) this.#origin.requests.push(m);
    return m;
  }

  /** Reads the body of a request whose head was read. */
  readBody(m: Message): Promise<Message> {
    return readBody(this.reader, m, "request");
  }

  /** Reads one whole request (head and body); null at EOF before any byte. */
  async readRequest(): Promise<Message | null> {
    const m = await this.readHead();
    return m === null ? null : await this.readBody(m);
  }

  /** Writes all bytes. */
  async write(data: string | Uint8Array): Promise<void> {
    const bytes = toBytes(data);
    let at = 0;
    while (at < bytes.length) at += await this.conn.write(bytes.subarray(at));
  }

  /** Sends a FIN (half-close); reading continues. */
  closeWrite(): Promise<void> {
    return this.conn.closeWrite();
  }

  /** Waits until the proxy closes its side (FIN or reset) and returns what was left unread. */
  waitEof(): Promise<Uint8Array> {
    return this.reader.readToEnd("waiting for the proxy to close the upstream connection");
  }

  /**
   * Closes. With request bytes still unread in the kernel buffer, Linux answers
   * with a TCP reset instead of a FIN (used to script "origin resets").
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.reader.markClosed();
    try {
      this.conn.close();
    } catch {
      // Already closed by a timed-out read; nothing more to release.
    }
  }
}

/** A per-connection origin script. */
export type OriginScript = (c: OriginConn, origin: Origin) => Promise<void> | void;

/** Options for {@link startOrigin}. */
export interface OriginOptions {
  /** Loopback address to listen on [`127.0.0.1`]. */
  hostname?: "127.0.0.1" | "::1";
}

/**
 * A raw-TCP origin on a loopback address and port 0. Each accepted connection
 * runs the script; errors thrown by a script before `close()` are rethrown by
 * `close()`, so an origin-side assertion fails the test.
 */
export class Origin implements AsyncDisposable {
  /** Listening address. */
  readonly hostname: string;
  /** Listening port. */
  readonly port: number;
  /** Accepted connections, in order. */
  readonly conns: OriginConn[] = [];
  /** Every request head read by a script, in order. */
  readonly requests: Message[] = [];
  /** Errors thrown by scripts before close() began. */
  readonly errors: unknown[] = [];
  readonly #listener: Deno.TcpListener;
  readonly #tasks: Promise<void>[] = [];
  readonly #accepting: Promise<void>;
  #waiters: Array<PromiseWithResolvers<OriginConn>> = [];
  #closing = false;

  /** Listens and starts accepting. */
  constructor(script: OriginScript, options: OriginOptions = {}) {
    this.hostname = options.hostname ?? "127.0.0.1";
    this.#listener = Deno.listen({ hostname: this.hostname, port: 0, transport: "tcp" });
    this.port = (this.#listener.addr as Deno.NetAddr).port;
    this.#accepting = this.#accept(script);
  }

  /** `host:port` as written in a URI authority (IPv6 in brackets). */
  get authority(): string {
    return this.hostname.includes(":") ? `[${this.hostname}]:${this.port}` : `${this.hostname}:${this.port}`;
  }

  /** An absolute-form http URI for `path` on this origin. */
  url(path = "/"): string {
    return `http://${this.authority}${path}`;
  }

  /** Every byte received on every connection, concatenated in connection order, as text. */
  get receivedText(): string {
    return this.conns.map((c) => c.receivedText).join("");
  }

  /** Request lines of every request any connection received (from the raw bytes, not the script). */
  requestLines(): string[] {
    return this.receivedText.split("\r\n").filter((l) => /^[A-Z]+ \S+ HTTP\/\d\.\d$/.test(l));
  }

  /** Resolves with the connection accepted at `index` (0-based). */
  connection(index: number): Promise<OriginConn> {
    if (index < this.conns.length) return Promise.resolve(this.conns[index]);
    while (this.#waiters.length <= index - this.conns.length) this.#waiters.push(deferred<OriginConn>());
    return this.#waiters[index - this.conns.length].promise;
  }

  async #accept(script: OriginScript): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        const c = new OriginConn(this, this.conns.length, conn);
        this.conns.push(c);
        this.#waiters.shift()?.resolve(c);
        this.#tasks.push((async () => {
          try {
            await script(c, this);
          } catch (error) {
            if (!this.#closing) this.errors.push(error);
          }
        })());
      }
    } catch (error) {
      // close() closed the listener: accept fails with BadResource.
      if (!this.#closing) throw error;
    }
  }

  /** Stops accepting, closes every connection, waits for the scripts, rethrows a script error. */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    await this.#accepting;
    for (const c of this.conns) c.close();
    // A script may be parked on a test's promise that will never settle; that holds no
    // resource once its connection is closed, so wait only a bounded time for it.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const bound = new Promise<void>((resolve) => timer = setTimeout(resolve, 2000));
    await Promise.race([Promise.allSettled(this.#tasks), bound]);
    clearTimeout(timer);
    if (this.errors.length > 0) throw this.errors[0];
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Starts a scripted origin. */
export function startOrigin(script: OriginScript, options: OriginOptions = {}): Origin {
  return new Origin(script, options);
}

/** What a {@link serve} handler returns for one request. */
export type Reply = string | Uint8Array | { bytes: string | Uint8Array; close?: boolean };

/**
 * A script that answers requests in a loop (keep-alive) until the proxy closes
 * the connection or a reply asks to close.
 */
export function serve(handler: (req: Message, c: OriginConn) => Reply | Promise<Reply>): OriginScript {
  return async (c) => {
    while (true) {
      const req = await c.readRequest();
      if (req === null) return;
      const reply = await handler(req, c);
      const { bytes, close } = typeof reply === "string" || reply instanceof Uint8Array
        ? { bytes: reply, close: false }
        : reply;
      await c.write(bytes);
      if (close) {
        c.close();
        return;
      }
    }
  };
}

/** A `200 OK` response with Content-Length and the given body (latin-1). */
export function ok(body: string | Uint8Array = "", fields: string[] = []): Uint8Array {
  const b = toBytes(body);
  const head = `HTTP/1.1 200 OK\r\n${fields.map((f) => `${f}\r\n`).join("")}Content-Length: ${b.length}\r\n\r\n`;
  return concat([latin1(head), b]);
}

/** A script that answers every request with `200` and a body naming the request target. */
export const echoTarget: OriginScript = serve((req) => ok(`target=${req.target}`));

// ---------------------------------------------------------------------------
// Client

/** A raw client connection; every read is bounded by `timeoutMs`. */
export class Client implements AsyncDisposable {
  /** The TCP connection. */
  readonly conn: Deno.TcpConn;
  /** Reader recording every byte received. */
  readonly reader: WireReader;
  #closed = false;

  private constructor(conn: Deno.TcpConn, timeoutMs: number) {
    this.conn = conn;
    this.reader = new WireReader(conn, timeoutMs);
  }

  /** Connects to `hostname:port`. */
  static async connect(port: number, hostname = "127.0.0.1", timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Client> {
    return new Client(await Deno.connect({ hostname, port, transport: "tcp" }), timeoutMs);
  }

  /** Every byte received so far, as latin-1 text. */
  get receivedText(): string {
    return text(this.reader.received);
  }

  /** Writes all bytes. */
  async write(data: string | Uint8Array): Promise<void> {
    const bytes = toBytes(data);
    let at = 0;
    while (at < bytes.length) at += await this.conn.write(bytes.subarray(at));
  }

  /** Reads one response (a 1xx counts as one); null if the connection ends before any byte. */
  async readResponse(requestMethod = "GET"): Promise<Message | null> {
    const m = await readHead(this.reader, "response");
    return m === null ? null : await readBody(this.reader, m, "response", requestMethod);
  }

  /** Reads one response and fails if there is none. */
  async response(requestMethod = "GET"): Promise<Message> {
    const m = await this.readResponse(requestMethod);
    assert.ok(m, "expected a response, but the connection ended");
    return m;
  }

  /** Asserts that the proxy closes the connection with no further bytes. */
  async assertClosed(): Promise<void> {
    const rest = await this.reader.readToEnd("waiting for the proxy to close the client connection");
    assert.equal(text(rest), "", "unexpected bytes before the close");
    assert.ok(this.reader.eof);
  }

  /** Sends a FIN (half-close); reading continues. */
  closeWrite(): Promise<void> {
    return this.conn.closeWrite();
  }

  /** Closes (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.reader.markClosed();
    try {
      this.conn.close();
    } catch {
      // Already closed by a timed-out read.
    }
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

// ---------------------------------------------------------------------------
// Proxy

/** A proxy under test on 127.0.0.1, port 0, logging nothing. */
export class TestProxy implements AsyncDisposable {
  /** The running proxy. */
  readonly handle: ProxyHandle;

  /** Starts the proxy. */
  constructor(options: ProxyOptions = {}) {
    this.handle = startProxy({ hostname: "127.0.0.1", port: 0, logger: silentLogger, ...options });
  }

  /** The port the proxy listens on. */
  get port(): number {
    return this.handle.addr.port;
  }

  /** Opens a raw client connection to the proxy. */
  connect(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Client> {
    return Client.connect(this.port, "127.0.0.1", timeoutMs);
  }

  /**
   * Sends `request` on a fresh connection and reads one final response
   * (skipping nothing: a 1xx is returned as is). The connection is closed after.
   */
  async roundTrip(request: string | Uint8Array, requestMethod?: string): Promise<Message> {
    await using client = await this.connect();
    await client.write(request);
    const method = requestMethod ?? /^[A-Z]+/.exec(text(toBytes(request).subarray(0, 16)))?.[0] ?? "GET";
    return await client.response(method);
  }

  /** Shuts down (short grace: tests finish their exchanges before disposing). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.handle.shutdown(200);
    await this.handle.finished;
  }
}

/** Starts a proxy for a test. */
export function startTestProxy(options: ProxyOptions = {}): TestProxy {
  return new TestProxy(options);
}

/** A GET request in absolute-form for `url`, with Host from the URL and extra field lines. */
export function get(url: string, fields: string[] = [], version = "1.1"): string {
  const host = /^[a-z]+:\/\/([^/?#]*)/i.exec(url)?.[1] ?? "";
  return `GET ${url} HTTP/${version}\r\nHost: ${host}\r\n${fields.map((f) => `${f}\r\n`).join("")}\r\n`;
}

/** A loopback port that was just bound and released: connecting to it is refused. */
export function closedPort(hostname = "127.0.0.1"): number {
  const l = Deno.listen({ hostname, port: 0, transport: "tcp" });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Whether `::1` can be bound on this machine. */
export function canBindIpv6Loopback(): boolean {
  try {
    Deno.listen({ hostname: "::1", port: 0, transport: "tcp" }).close();
    return true;
  } catch {
    // No IPv6 loopback here: the caller skips the IPv6 test with that reason.
    return false;
  }
}

/**
 * A listener whose accept queue is full: it never accepts, and enough
 * connections were opened to fill its backlog, so Linux drops further SYNs
 * and a new connect hangs until its own timeout (a loopback-only way to test
 * connect timeouts). Returns null when the queue could not be made to block
 * (then the caller skips with that reason).
 */
export async function fullBacklogListener(maxConns = 4096): Promise<{ port: number; close(): void } | null> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0, transport: "tcp" });
  const port = (listener.addr as Deno.NetAddr).port;
  const conns: Deno.Conn[] = [];
  const close = () => {
    for (const c of conns) c.close();
    listener.close();
  };
  const tryConnect = async (ms: number): Promise<boolean> => {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), ms);
    try {
      conns.push(await Deno.connect({ hostname: "127.0.0.1", port, signal: abort.signal }));
      return true;
    } catch (error) {
      if (abort.signal.aborted) return false;
      throw error;
    } finally {
      clearTimeout(timer);
    }
  };
  try {
    while (conns.length < maxConns) {
      if (await tryConnect(100)) continue;
      // Blocked once: it must stay blocked (two longer probes) to count as deterministic.
      if (!await tryConnect(200) && !await tryConnect(200)) return { port, close };
    }
  } catch (error) {
    close();
    throw error;
  }
  close();
  return null;
}
