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
  /** The time the line is for (ms since the epoch; default: now). */
  now?: number;
}

/**
 * One access log line (without the newline) for a record. Every client-sent
 * value is escaped so that no byte can break the line or forge another.
 */
export function formatRecord(r: ExchangeRecord, format: LogFormat, options: FormatOptions = {}): string {
  const now = options.now ?? Date.now();
  const target = options.query ? r.target : stripQuery(r.target);
  switch (format) {
    case "json":
      return JSON.stringify({
        time: new Date(now).toISOString(),
        client: r.client.hostname,
        client_port: r.client.port,
        kind: r.kind,
        method: r.method,
        target,
        status: r.status,
        bytes_from_client: r.bytesFromClient,
        bytes_to_client: r.bytesToClient,
        upstream: r.upstream === null ? null : hostPort(r.upstream.hostname, r.upstream.port),
        reused: r.reused,
        connect_ms: r.timings.connect,
        first_byte_ms: r.timings.firstByte,
        total_ms: r.timings.total,
        error: r.error,
        tunnel_end: r.tunnelEnd?.end ?? null,
        first_fin: r.tunnelEnd?.firstFin ?? null,
        content_type: r.contentType,
        user: null,
      });
    case "squid": {
      // %ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt (Squid's native access.log)
      const seconds = Math.floor(now / 1000);
      const millis = String(now % 1000).padStart(3, "0");
      const elapsed = String(Math.round(r.timings.total)).padStart(6, " ");
      const hierarchy = r.upstream === null ? "HIER_NONE/-" : `HIER_DIRECT/${r.upstream.hostname}`;
      return `${seconds}.${millis} ${elapsed} ${r.client.hostname} ${squidResult(r)}/${
        String(r.status).padStart(3, "0")
      } ${r.bytesToClient} ${safe(r.method || "NONE")} ${safe(target || "error:invalid-request")} - ${hierarchy} ${
        r.contentType === null ? "-" : safe(r.contentType.split(";")[0].trim() || "-")
      }`;
    }
    case "common": {
      // host ident authuser [date] "request" status bytes
      const request = r.method === "" ? "-" : `${safe(r.method)} ${safe(target)} HTTP/1.1`;
      return `${r.client.hostname} - - [${clfDate(now)}] "${request}" ${r.status} ${r.bytesToClient}`;
    }
    case "text": {
      const time = new Date(now).toISOString().slice(11, 23);
      const tail = r.error !== null ? ` ${r.error}` : r.tunnelEnd !== null ? ` tunnel ${r.tunnelEnd.end}` : "";
      return `${time} ${r.client.hostname} ${safe(r.method || "-")} ${safe(target || "-")} ${r.status} ${
        r.timings.total.toFixed(1)
      }ms ${r.bytesToClient}B${tail}`;
    }
  }
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
  /** Lines waiting for the sink at most, in bytes; more are dropped and counted [1 MiB]. */
  maxPendingBytes?: number;
}

const encoder = new TextEncoder();

/**
 * A bounded, non-blocking access log writer. `hooks` is the built-in
 * `onExchangeEnd` consumer to pass to `startProxy` (with any user hooks).
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
  readonly #format: LogFormat;
  readonly #query: boolean;
  readonly #maxPending: number;
  #sink: LogSink;
  #lines: string[] = [];
  #pending = 0;
  #writing: Promise<void> | null = null;
  /** Lines dropped because the sink was slower than traffic. */
  dropped = 0;
  /** Lines written. */
  written = 0;

  /** Writes to `sink`. */
  constructor(sink: LogSink, options: AccessLogOptions = {}) {
    this.#sink = sink;
    this.#format = options.format ?? "json";
    this.#query = options.query ?? false;
    this.#maxPending = options.maxPendingBytes ?? 1024 * 1024;
  }

  /** The hook that logs every record. */
  get hooks(): ProxyHooks {
    return { onExchangeEnd: (record) => this.add(record) };
  }

  /** Queues the line for a record (dropped, and counted, when too much is waiting). */
  add(record: ExchangeRecord): void {
    const line = formatRecord(record, this.#format, { query: this.#query }) + "\n";
    if (this.#pending + line.length > this.#maxPending) {
      this.dropped++;
      return;
    }
    this.#lines.push(line);
    this.#pending += line.length;
    this.#writing ??= this.#drain();
  }

  /** Writes what waits, in batches, until nothing does. */
  async #drain(): Promise<void> {
    try {
      while (this.#lines.length > 0) {
        const batch = this.#lines.join("");
        const count = this.#lines.length;
        this.#lines = [];
        try {
          await writeAll(this.#sink, encoder.encode(batch));
          this.written += count;
        } catch {
          // The sink failed (a closed pipe, a full disk): these lines are lost, and counted.
          this.dropped += count;
        }
        this.#pending -= batch.length;
      }
    } finally {
      this.#writing = null;
    }
  }

  /**
   * Resolves when every queued line has been written (or dropped), or after
   * `maxMs` (a sink nobody reads must not hold a shutdown).
   */
  async flush(maxMs = Infinity): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = maxMs === Infinity ? null : new Promise<void>((resolve) => timer = setTimeout(resolve, maxMs));
    try {
      while (this.#writing !== null) {
        if (expired === null) await this.#writing;
        else if (await Promise.race([this.#writing.then(() => false), expired.then(() => true)])) return;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Switches to another sink (log rotation: a reopened file), after the queued lines. */
  async reopen(sink: LogSink): Promise<void> {
    await this.flush();
    this.#sink = sink;
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
