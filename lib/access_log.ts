/**
 * The access log: one line per exchange and per tunnel, made from the
 * {@link ExchangeRecord} by a built-in `onExchangeEnd` consumer (the same hook
 * users get). Formats are pure functions; the writer is bounded and never
 * blocks the proxy: lines wait in one buffer that is written whole, and when
 * the sink is slower than traffic, lines are dropped and counted.
 *
 * @module
 */
import type { ExchangeRecord, ProxyHooks } from "./hooks.ts";
import { writeAll } from "./writer.ts";

/** Access log formats. */
export const LOG_FORMATS = ["json", "squid", "common", "text"] as const;
/** An access log format. */
export type LogFormat = typeof LOG_FORMATS[number];

/** Options for formatting a line. */
export interface FormatOptions {
  /** Keep the query string of targets (default: stripped, as Squid does). */
  query?: boolean;
  /** The time the line is for (ms since the epoch; default: the record's `endedAt`). */
  now?: number;
}

/**
 * One access log line (without the newline) for a record. Every client-sent
 * value is escaped so that no byte can break the line or forge another.
 */
export function formatRecord(r: ExchangeRecord, format: LogFormat, options: FormatOptions = {}): string {
  const now = options.now ?? r.endedAt;
  const target = options.query ? r.target : stripQuery(r.target);
  switch (format) {
    case "json": {
      // Written by hand (a third of JSON.stringify's cost on an object); strings still go
      // through JSON.stringify, which escapes every byte a client could send.
      const t = r.timings;
      const tunnel = r.tunnelEnd;
      // Addresses come from the socket, kinds and ends are ours: no escaping needed there.
      const upstream = r.upstream === null ? "null" : `"${hostPort(r.upstream.hostname, r.upstream.port)}"`;
      return `{"time":"${isoTime(now)}","client":"${r.client.hostname}","client_port":${r.client.port},` +
        `"kind":"${r.kind}","method":${json(r.method)},"target":${json(target)},"status":${r.status},` +
        `"bytes_from_client":${r.bytesFromClient},"bytes_to_client":${r.bytesToClient},"upstream":${upstream},` +
        `"reused":${r.reused},"connect_ms":${t.connect},"first_byte_ms":${t.firstByte},"total_ms":${t.total},` +
        `"error":${json(r.error)},"tunnel_end":${tunnel === null ? "null" : `"${tunnel.end}"`},` +
        `"first_fin":${tunnel?.firstFin ? `"${tunnel.firstFin}"` : "null"},` +
        `"content_type":${json(r.contentType)},"user":${json(r.user ?? null)},"parent":${r.viaParent === true}}`;
    }
    case "squid": {
      // %ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt (Squid's native access.log)
      const seconds = Math.floor(now / 1000);
      const millis = String(now % 1000).padStart(3, "0");
      const elapsed = String(Math.round(r.timings.total)).padStart(6, " ");
      // Squid's hierarchy codes: straight to the origin, or through the (first and only) parent.
      const hierarchy = r.upstream === null
        ? "HIER_NONE/-"
        : `${r.viaParent ? "FIRSTUP_PARENT" : "HIER_DIRECT"}/${r.upstream.hostname}`;
      return `${seconds}.${millis} ${elapsed} ${r.client.hostname} ${squidResult(r)}/${
        String(r.status).padStart(3, "0")
      } ${r.bytesToClient} ${safe(r.method || "NONE")} ${safe(target || "error:invalid-request")} ${
        r.user ? safe(r.user) : "-"
      } ${hierarchy} ${r.contentType === null ? "-" : safe(r.contentType.split(";")[0].trim() || "-")}`;
    }
    case "common": {
      // host ident authuser [date] "request" status bytes
      const request = r.method === "" ? "-" : `${safe(r.method)} ${safe(target)} HTTP/1.1`;
      const user = r.user ? safe(r.user) : "-";
      return `${r.client.hostname} - ${user} [${clfDate(now)}] "${request}" ${r.status} ${r.bytesToClient}`;
    }
    case "text": {
      const time = isoTime(now).slice(11, 23);
      const tail = r.error !== null ? ` ${r.error}` : r.tunnelEnd !== null ? ` tunnel ${r.tunnelEnd.end}` : "";
      return `${time} ${r.client.hostname} ${safe(r.method || "-")} ${safe(target || "-")} ${r.status} ${
        r.timings.total.toFixed(1)
      }ms ${r.bytesToClient}B${tail}`;
    }
  }
}

/** A JSON value for a string or null (plain printable ASCII without quotes or backslashes needs no escaping). */
function json(value: string | null): string {
  if (value === null) return "null";
  return PLAIN_JSON.test(value) ? `"${value}"` : JSON.stringify(value);
}

const PLAIN_JSON = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

let isoSecond = -1;
let isoPrefix = "";

/** RFC 3339 with milliseconds (UTC); the date and time up to the second are made once per second. */
function isoTime(now: number): string {
  const second = Math.floor(now / 1000);
  if (second !== isoSecond) {
    isoSecond = second;
    isoPrefix = new Date(second * 1000).toISOString().slice(0, 19);
  }
  const ms = now - second * 1000;
  return `${isoPrefix}.${ms < 10 ? "00" : ms < 100 ? "0" : ""}${ms}Z`;
}

/** Squid's result code (`%Ss`) for a record. */
function squidResult(r: ExchangeRecord): string {
  if (r.kind === "connect") return r.status === 200 ? "TCP_TUNNEL" : r.status === 403 ? "TCP_DENIED" : "NONE_NONE";
  if (r.status === 403 || r.status === 407) return "TCP_DENIED";
  if (r.kind === "local" && r.upstream === null && r.status >= 400 && r.status < 500) return "NONE_NONE";
  if (r.error === "client-gone" || r.error === "upstream-body-failed") return "TCP_MISS_ABORTED";
  return "TCP_MISS";
}

/** The target without its query string (it may carry secrets). */
function stripQuery(target: string): string {
  const q = target.indexOf("?");
  return q === -1 ? target : target.slice(0, q);
}

/** Escapes anything outside printable ASCII, spaces, quotes and backslashes as %XX (one token per field). */
function safe(text: string): string {
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f || c === 0x22 || c === 0x5c || c === 0x25) {
      out += `%${(c & 0xff).toString(16).toUpperCase().padStart(2, "0")}`;
    } else out += text[i];
  }
  return out;
}

function hostPort(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** `10/Oct/2000:13:55:36 +0000` (Common Log Format, UTC). */
function clfDate(now: number): string {
  const d = new Date(now);
  const two = (n: number) => String(n).padStart(2, "0");
  return `${two(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${two(d.getUTCHours())}:${
    two(d.getUTCMinutes())
  }:${two(d.getUTCSeconds())} +0000`;
}

/** Where log lines go: anything with `write` (stdout, a file). */
export interface LogSink {
  /** Writes some of `p`, resolving to how many bytes were written (as `Deno.stdout.write`). */
  write(p: Uint8Array): Promise<number>;
}

/** Options for {@link AccessLog}. */
export interface AccessLogOptions {
  /** The line format [`json`]. */
  format?: LogFormat;
  /** Keep query strings [false]. */
  query?: boolean;
  /** Bytes of lines waiting for the sink at most (two buffers of half as much); more are dropped and counted [128 KiB]. */
  maxPendingBytes?: number;
}

const encoder = new TextEncoder();
/** How long lines are gathered before they are written together (ms). */
const BATCH_MS = 50;

/**
 * A bounded, non-blocking access log writer. `hooks` is the built-in
 * `onExchangeEnd` consumer to pass to `startProxy` (with any user hooks).
 *
 * Each line is encoded at once into one of two reused buffers (no line string
 * or batch outlives V8's young generation); a full buffer, or one that waited
 * 50 ms, is written while the other fills. When both are busy (the sink is
 * slower than traffic) lines are dropped and counted, never queued.
 *
 * @example
 * ```ts
 * import { AccessLog, startProxy } from "../mod.ts";
 * const log = new AccessLog(Deno.stdout, { format: "squid" });
 * const proxy = startProxy({ port: 0, hooks: [log.hooks] });
 * await proxy.shutdown();
 * await log.flush();
 * ```
 */
export class AccessLog {
  #format: LogFormat;
  #query: boolean;
  #sink: LogSink;
  readonly #buffers: [Uint8Array, Uint8Array];
  /** The buffer being filled (0 or 1), its bytes and lines. */
  #current = 0;
  #fill = 0;
  #lines = 0;
  /** The other buffer's write, while it runs. */
  #writing: Promise<void> | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined = undefined;
  /** Lines dropped because the sink was slower than traffic (or failed). */
  dropped = 0;
  /** Lines written. */
  written = 0;

  /** Writes to `sink`. */
  constructor(sink: LogSink, options: AccessLogOptions = {}) {
    this.#sink = sink;
    this.#format = options.format ?? "json";
    this.#query = options.query ?? false;
    const size = Math.max(4096, Math.floor((options.maxPendingBytes ?? 128 * 1024) / 2));
    this.#buffers = [new Uint8Array(size), new Uint8Array(size)];
  }

  /** Changes the format and query handling for the lines from now on (a reload). */
  configure(options: { format?: LogFormat; query?: boolean }): void {
    if (options.format !== undefined) this.#format = options.format;
    if (options.query !== undefined) this.#query = options.query;
  }

  /** The hook that logs every record. */
  get hooks(): ProxyHooks {
    return { onExchangeEnd: (record) => this.add(record) };
  }

  /** Encodes the line for a record into the current buffer (dropped, and counted, when there is no room). */
  add(record: ExchangeRecord): void {
    const line = formatRecord(record, this.#format, { query: this.#query }) + "\n";
    if (this.#encode(line)) {
      this.#lines++;
    } else if (this.#writing !== null) {
      // Both buffers are busy: the sink is slower than traffic.
      this.dropped++;
      return;
    } else {
      if (this.#fill > 0) this.#write();
      if (this.#encode(line)) {
        this.#lines++;
      } else {
        // Longer than a whole buffer (a very long target): it goes out on its own, after the write in flight.
        this.#send(encoder.encode(line), 1);
        return;
      }
    }
    if (this.#writing === null && this.#timer === undefined) {
      this.#timer = setTimeout(this.#onTimer, BATCH_MS);
      Deno.unrefTimer(this.#timer);
    }
  }

  /** Encodes a whole line into the current buffer; false (and the buffer unchanged) when it does not fit. */
  #encode(line: string): boolean {
    const buffer = this.#buffers[this.#current];
    // Most lines are short: UTF-8 takes at most 3 bytes per UTF-16 unit, so these surely fit.
    const room = buffer.length - this.#fill;
    if (line.length * 3 > room && line.length > room) return false;
    const { read, written } = encoder.encodeInto(line, buffer.subarray(this.#fill));
    if (read < line.length) return false;
    this.#fill += written;
    return true;
  }

  readonly #onTimer = (): void => {
    this.#timer = undefined;
    if (this.#writing === null && this.#fill > 0) this.#write();
  };

  /** Writes the current buffer and switches to the other one. */
  #write(): void {
    const bytes = this.#buffers[this.#current].subarray(0, this.#fill);
    const lines = this.#lines;
    this.#current ^= 1;
    this.#fill = 0;
    this.#lines = 0;
    this.#send(bytes, lines);
  }

  /** Starts a write, after the one in flight if there is one (writes never overlap). */
  #send(bytes: Uint8Array, lines: number): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const previous = this.#writing;
    const start = () => writeAll(this.#sink, bytes);
    const writing: Promise<void> = (previous === null ? start() : previous.then(start)).then(
      () => {
        this.written += lines;
      },
      () => {
        // The sink failed (a closed pipe, a full disk): these lines are lost, and counted.
        this.dropped += lines;
      },
    ).finally(() => {
      if (this.#writing !== writing) return; // a later write was chained after this one
      this.#writing = null;
      // What gathered meanwhile goes on the next tick of the batch timer.
      if (this.#fill > 0 && this.#timer === undefined) {
        this.#timer = setTimeout(this.#onTimer, BATCH_MS);
        Deno.unrefTimer(this.#timer);
      }
    });
    this.#writing = writing;
  }

  /**
   * Writes the lines gathered when it is called and resolves when they have
   * been written (or dropped), or after `maxMs` (a sink nobody reads must not
   * hold a shutdown). Lines added meanwhile are left to the batch timer, so
   * steady traffic cannot keep a flush waiting.
   */
  async flush(maxMs = Infinity): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = maxMs === Infinity
      ? null
      : new Promise<"expired">((resolve) => timer = setTimeout(() => resolve("expired"), maxMs));
    const wait = (p: Promise<void>) => expired === null ? p : Promise.race([p, expired]);
    try {
      // At most two writes: the one in flight, then what was gathered before the call.
      const pending = this.#fill > 0;
      if (this.#writing !== null && await wait(this.#writing) === "expired") return;
      if (pending && this.#fill > 0 && this.#writing === null) {
        this.#write();
        await wait(this.#writing!);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Switches to another sink (log rotation: a reopened file) at once: lines
   * not yet written go to the new one. Resolves when the write still going to
   * the old sink has ended, or after `maxMs`, so the caller can close the old one.
   */
  async reopen(sink: LogSink, maxMs = 5000): Promise<void> {
    this.#sink = sink;
    const writing = this.#writing;
    if (writing === null) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([writing, new Promise<void>((resolve) => timer = setTimeout(resolve, maxMs))]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** How the CLI (and each `--workers` thread) sets up the access log. */
export interface AccessLogConfig {
  format: LogFormat;
  /** A file to append to; null: standard output. */
  file: string | null;
  query: boolean;
}

/** Opens the sink for a config: the file (appended to, created if missing) or standard output. */
export function openLogSink(file: string | null): LogSink & { close?: () => void } {
  if (file === null) return Deno.stdout;
  return Deno.openSync(file, { append: true, create: true });
}

/** An access log for a config, with its sink opened. */
export function accessLogFor(config: AccessLogConfig): { log: AccessLog; sink: LogSink & { close?: () => void } } {
  const sink = openLogSink(config.file);
  return { log: new AccessLog(sink, { format: config.format, query: config.query }), sink };
}

/**
 * Log rotation: opens the configured file again and switches the log to it;
 * the old file is closed once the write still going to it has ended. Never
 * throws: a file that cannot be opened leaves the log on the old one, and the
 * reason is returned (null on success).
 */
export function reopenAccessLog(
  access: { log: AccessLog; sink: LogSink & { close?: () => void } },
  config: AccessLogConfig,
): string | null {
  if (config.file === null) return null;
  let fresh: LogSink & { close?: () => void };
  try {
    fresh = openLogSink(config.file);
  } catch (error) {
    return `cannot reopen --log-file ${config.file}: ${error instanceof Error ? error.message : error}`;
  }
  const old = access.sink;
  access.sink = fresh;
  access.log.reopen(fresh).finally(() => {
    // Standard output is never closed (a reload may move the log from it to a file).
    if (old === Deno.stdout) return;
    try {
      old.close?.();
    } catch {
      // Already closed.
    }
  });
  return null;
}
