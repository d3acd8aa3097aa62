/**
 * Prometheus metrics for the proxy: a registry fed by the {@link ExchangeRecord}
 * of every exchange and tunnel (a built-in `onExchangeEnd` consumer, like the
 * access log), gauges and counters the server drives (connections, tunnels,
 * refusals), and collectors read at scrape time; rendered in the text
 * exposition format 0.0.4. Also a small ring buffer of recent exchanges for a
 * status page.
 *
 * Recording allocates nothing: every counter lives in a typed array indexed by
 * small integers folded from the record (kind, method, status) by comparisons,
 * never by building a key. Strings are made only when rendering.
 *
 * Labels are bounded: kinds, methods and statuses fold to fixed sets, tunnel
 * ends and refusal reasons are the proxy's own, and error codes are capped at
 * {@link MAX_ERROR_CODES}. No host, URL or client address is ever a label.
 *
 * @module
 */
import type { ExchangeRecord, ProxyHooks } from "./hooks.ts";

/** The `Content-Type` of {@link Metrics.render}'s output (text exposition format 0.0.4). */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Distinct error codes labelled in `waypost_errors_total`; further codes are counted under `other`. */
export const MAX_ERROR_CODES = 64;

/** Error codes longer than this are counted under `other` (they would be kept for the life of the process). */
export const MAX_ERROR_CODE_LENGTH = 100;

/** Why the server refused a connection (`waypost_connections_refused_total{reason}`). */
export type RefusalReason = "limit" | "client-limit" | "draining" | "untrusted" | "denied";

/** A value read when the metrics are rendered: one sample without labels (such as the access log's drops). */
export interface Collector {
  /** The metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`); a counter's ends in `_total`. */
  readonly name: string;
  /** The `# HELP` text. */
  readonly help: string;
  /** `counter` (only goes up) or `gauge`. */
  readonly type: "counter" | "gauge";
  /** The current value; a collector that throws is left out of that rendering. */
  read(): number;
}

// ---- Label folding (record time: comparisons and table lookups only) ----

const KINDS = ["http", "connect", "upgrade", "local"] as const;

/** Methods labelled as themselves (case-sensitive, as RFC 9110 §9.1 says); then `other` and `none` (""). */
const METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "other", "none"];
const METHOD_OTHER = 9;
const METHOD_NONE = 10;

/**
 * Statuses labelled exactly: the ones the proxy itself sends or commonly relays.
 * Any other status in 100-599 is labelled by class (`4xx`), 0 (none sent) is
 * `none`, and anything else `other`: at most 33 values.
 */
const EXACT_STATUSES = [
  101,
  200,
  204,
  206,
  301,
  302,
  304,
  400,
  401,
  403,
  404,
  405,
  407,
  408,
  413,
  414,
  421,
  429,
  431,
  500,
  501,
  502,
  503,
  504,
  505,
  508,
];
const CODE_CLASS = EXACT_STATUSES.length; // "1xx"; "5xx" is CODE_CLASS + 4
const CODE_NONE = CODE_CLASS + 5;
const CODE_OTHER = CODE_CLASS + 6;
const CODES = [...EXACT_STATUSES.map(String), "1xx", "2xx", "3xx", "4xx", "5xx", "none", "other"];

/** Status (100-599) -> code label index. */
const CODE_OF_STATUS = (() => {
  const table = new Uint8Array(600);
  for (let s = 100; s < 600; s++) table[s] = CODE_CLASS + Math.floor(s / 100) - 1;
  EXACT_STATUSES.forEach((s, i) => table[s] = i);
  return table;
})();

const TUNNEL_ENDS = ["closed", "reset", "idle-timeout", "aborted"] as const;
const REFUSAL_REASONS = ["limit", "client-limit", "draining", "untrusted", "denied"] as const;

function kindIndex(kind: string): number {
  return kind === "http" ? 0 : kind === "connect" ? 1 : kind === "upgrade" ? 2 : 3;
}

function methodIndex(method: string): number {
  switch (method) {
    case "GET":
      return 0;
    case "HEAD":
      return 1;
    case "POST":
      return 2;
    case "PUT":
      return 3;
    case "DELETE":
      return 4;
    case "CONNECT":
      return 5;
    case "OPTIONS":
      return 6;
    case "TRACE":
      return 7;
    case "PATCH":
      return 8;
    case "":
      return METHOD_NONE;
    default:
      return METHOD_OTHER;
  }
}

function codeIndex(status: number): number {
  if (status >= 100 && status < 600 && (status | 0) === status) return CODE_OF_STATUS[status];
  return status === 0 ? CODE_NONE : CODE_OTHER;
}

function tunnelEndIndex(end: string): number {
  return end === "closed" ? 0 : end === "reset" ? 1 : end === "idle-timeout" ? 2 : 3;
}

function refusalIndex(reason: RefusalReason): number {
  return REFUSAL_REASONS.indexOf(reason);
}

// ---- Histograms ----

/** Upper bounds (ms) for request durations and time to first byte: 1 ms to 60 s. */
const REQUEST_BOUNDS_MS = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000];
/** Upper bounds (ms) for tunnel lifetimes: 100 ms to 1 h. */
const TUNNEL_BOUNDS_MS = [100, 1000, 5000, 10000, 30000, 60000, 300000, 900000, 1800000, 3600000];

/** A histogram of millisecond observations, rendered in seconds. */
class Histogram {
  readonly #bounds: Float64Array;
  /** Per bucket (not cumulative); the last is +Inf. */
  readonly #counts: Float64Array;
  /** `le` label values, made once. */
  readonly #les: string[];
  #sumMs = 0;
  #count = 0;

  constructor(boundsMs: readonly number[]) {
    this.#bounds = Float64Array.from(boundsMs);
    this.#counts = new Float64Array(boundsMs.length + 1);
    this.#les = [...boundsMs.map((ms) => formatNumber(ms / 1000)), "+Inf"];
  }

  /** Counts one observation; NaN and negatives (a clock step) count as 0. */
  observe(ms: number): void {
    if (!(ms >= 0)) ms = 0;
    const bounds = this.#bounds;
    // Most observations are small: a scan from the low end stops early.
    let i = 0;
    while (i < bounds.length && ms > bounds[i]) i++;
    this.#counts[i]++;
    this.#sumMs += ms;
    this.#count++;
  }

  /** The counts so far (a copy). */
  snapshot(): HistogramSnapshot {
    return { counts: Array.from(this.#counts), sumMs: this.#sumMs, count: this.#count };
  }

  /** Renders these counts plus `others` (snapshots of the same histogram in other threads). */
  render(out: string[], name: string, help: string, others: readonly HistogramSnapshot[] = []): void {
    header(out, name, "histogram", help);
    let cumulative = 0;
    let sumMs = this.#sumMs;
    let count = this.#count;
    for (const o of others) {
      sumMs += o.sumMs;
      count += o.count;
    }
    for (let i = 0; i < this.#counts.length; i++) {
      cumulative += this.#counts[i];
      for (const o of others) cumulative += o.counts[i] ?? 0;
      out.push(`${name}_bucket{le="${this.#les[i]}"} ${formatNumber(cumulative)}`);
    }
    out.push(`${name}_sum ${formatNumber(sumMs / 1000)}`, `${name}_count ${formatNumber(count)}`);
  }
}

/** A histogram's counts, as one thread sends them to another. */
export interface HistogramSnapshot {
  /** Observations per bucket (not cumulative); the last is +Inf. */
  counts: number[];
  /** The sum of the observations, in ms. */
  sumMs: number;
  /** How many observations. */
  count: number;
}

/**
 * One thread's counters (`--workers`): the main thread adds the latest
 * snapshot of every other thread to its own when it renders, so a scrape of
 * the admin port sees the whole process. Plain data (structured-clone safe).
 */
export interface MetricsSnapshot {
  /** `waypost_requests_total` by series (kind × method × code, in the registry's order). */
  requests: number[];
  /** Bytes read from clients. */
  bytesReceived: number;
  /** Bytes written to clients. */
  bytesSent: number;
  /** Exchanges that opened an upstream connection. */
  upstreamConnects: number;
  /** Exchanges that reused a pooled one. */
  upstreamReuses: number;
  /** Errors by stable code (`other` for those past the cap). */
  errors: Record<string, number>;
  /** `waypost_request_duration_seconds`. */
  duration: HistogramSnapshot;
  /** `waypost_time_to_first_byte_seconds`. */
  firstByte: HistogramSnapshot;
  /** `waypost_tunnel_duration_seconds`. */
  tunnelDuration: HistogramSnapshot;
  /** Tunnels ended, by how (the registry's order). */
  tunnelEnds: number[];
  /** Connections refused, by reason (the registry's order). */
  refused: number[];
  /** Client connections open. */
  connections: number;
  /** Tunnels open. */
  tunnels: number;
}

// ---- The registry ----

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

/** Names of the built-in families (and a histogram's series), which collectors may not take. */
const BUILT_IN_NAMES: ReadonlySet<string> = new Set([
  "waypost_build_info",
  "waypost_start_time_seconds",
  "process_start_time_seconds",
  "process_resident_memory_bytes",
  "waypost_client_connections",
  "waypost_tunnels",
  "waypost_connections_refused_total",
  "waypost_requests_total",
  "waypost_client_bytes_received_total",
  "waypost_client_bytes_sent_total",
  "waypost_upstream_connects_total",
  "waypost_upstream_reuses_total",
  "waypost_errors_total",
  "waypost_tunnel_ends_total",
  ...["waypost_request_duration_seconds", "waypost_time_to_first_byte_seconds", "waypost_tunnel_duration_seconds"]
    .flatMap((h) => [h, `${h}_bucket`, `${h}_sum`, `${h}_count`]),
]);

/**
 * The proxy's metrics. Feed it every {@link ExchangeRecord} (pass {@link Metrics.hooks}
 * to `startProxy`), call the connection and tunnel methods from the server, and
 * serve {@link Metrics.render} with {@link METRICS_CONTENT_TYPE}.
 *
 * Families (all with `# HELP` and `# TYPE`; seconds and bytes; counters end in `_total`):
 * - `waypost_build_info{version,deno}` gauge 1; `waypost_start_time_seconds`,
 *   `process_start_time_seconds`, `process_resident_memory_bytes` gauges.
 * - `waypost_client_connections`, `waypost_tunnels`: active, gauges.
 * - `waypost_connections_refused_total{reason}`: `limit`, `client-limit`, `draining`.
 * - `waypost_requests_total{kind,method,code}`: one per record; `kind` is the record's,
 *   `method` one of GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH, `other`, `none`
 *   (no request head); `code` the exact status for a fixed list of common ones, else its
 *   class (`1xx`-`5xx`), `none` (none sent) or `other`. Only series seen are rendered.
 * - `waypost_client_bytes_received_total`, `waypost_client_bytes_sent_total`.
 * - `waypost_upstream_connects_total` (new upstream connections), `waypost_upstream_reuses_total`.
 * - `waypost_errors_total{code}`: the stable error code, at most {@link MAX_ERROR_CODES}
 *   distinct, then `other`.
 * - `waypost_request_duration_seconds` (exchanges that are not tunnels),
 *   `waypost_time_to_first_byte_seconds` (when a response head came) and
 *   `waypost_tunnel_duration_seconds` (CONNECT tunnels and upgrades): histograms.
 * - `waypost_tunnel_ends_total{end}`: `closed`, `reset`, `idle-timeout`, `aborted`.
 * - Collectors: `waypost_log_lines_dropped_total` and `waypost_log_lines_written_total`
 *   after {@link Metrics.watchAccessLog}, and any added with {@link Metrics.addCollector}.
 *
 * @example
 * ```ts
 * import { Metrics, METRICS_CONTENT_TYPE } from "./metrics.ts";
 * const metrics = new Metrics({ version: "0.1.0", deno: Deno.version.deno });
 * metrics.connectionOpened();
 * const response = new Response(metrics.render(), { headers: { "Content-Type": METRICS_CONTENT_TYPE } });
 * console.assert((await response.text()).includes("waypost_client_connections 1\n"));
 * ```
 */
export class Metrics {
  /** When this registry was made (ms since the epoch). */
  readonly startedAt: number = Date.now();
  readonly #info: string;
  readonly #requests = new Float64Array(KINDS.length * METHODS.length * CODES.length);
  #bytesReceived = 0;
  #bytesSent = 0;
  #upstreamConnects = 0;
  #upstreamReuses = 0;
  /** Error code -> index in #errors (at most MAX_ERROR_CODES entries; `other` is the last slot). */
  readonly #errorIndex = new Map<string, number>();
  readonly #errorCodes: string[] = [];
  readonly #errors = new Float64Array(MAX_ERROR_CODES + 1);
  readonly #duration = new Histogram(REQUEST_BOUNDS_MS);
  readonly #firstByte = new Histogram(REQUEST_BOUNDS_MS);
  readonly #tunnelDuration = new Histogram(TUNNEL_BOUNDS_MS);
  readonly #tunnelEnds = new Float64Array(TUNNEL_ENDS.length);
  readonly #refused = new Float64Array(REFUSAL_REASONS.length);
  #connections = 0;
  #tunnels = 0;
  readonly #collectors: Collector[] = [];
  /** The latest snapshot of each other thread (`--workers`), by thread number. */
  readonly #remotes = new Map<number, MetricsSnapshot>();

  /** A registry for this build (`waypost_build_info` labels). */
  constructor(info: { version: string; deno: string }) {
    this.#info = `{version="${escapeLabel(info.version)}",deno="${escapeLabel(info.deno)}"}`;
  }

  /** The built-in `onExchangeEnd` consumer that records every exchange and tunnel. */
  get hooks(): ProxyHooks {
    return { onExchangeEnd: (record) => this.record(record) };
  }

  /** Counts one finished exchange or tunnel (no allocation). */
  record(r: ExchangeRecord): void {
    const series = (kindIndex(r.kind) * METHODS.length + methodIndex(r.method)) * CODES.length + codeIndex(r.status);
    this.#requests[series]++;
    this.#bytesReceived += r.bytesFromClient;
    this.#bytesSent += r.bytesToClient;
    if (r.reused) this.#upstreamReuses++;
    else if (r.upstream !== null) this.#upstreamConnects++;
    if (r.error !== null) this.#countError(r.error);
    const t = r.timings;
    if (t.firstByte !== null) this.#firstByte.observe(t.firstByte);
    const tunnel = r.tunnelEnd;
    if (tunnel === null) {
      this.#duration.observe(t.total);
    } else {
      this.#tunnelDuration.observe(t.total);
      this.#tunnelEnds[tunnelEndIndex(tunnel.end)]++;
    }
  }

  /** Counts an error code under its own label while fewer than {@link MAX_ERROR_CODES} are known, else `other`. */
  #countError(code: string): void {
    let i = this.#errorIndex.get(code);
    if (i === undefined) {
      if (this.#errorCodes.length >= MAX_ERROR_CODES || code.length > MAX_ERROR_CODE_LENGTH || code === "other") {
        i = MAX_ERROR_CODES;
      } else {
        i = this.#errorCodes.length;
        this.#errorCodes.push(code);
        this.#errorIndex.set(code, i);
      }
    }
    this.#errors[i]++;
  }

  /** Totals for a status page: requests, errors, open connections and tunnels, bytes each way. */
  summary(): {
    requests: number;
    errors: number;
    connections: number;
    tunnels: number;
    bytesReceived: number;
    bytesSent: number;
  } {
    let requests = 0;
    for (const n of this.#requests) requests += n;
    let errors = 0;
    for (const n of this.#errors) errors += n;
    const out = {
      requests,
      errors,
      connections: this.#connections,
      tunnels: this.#tunnels,
      bytesReceived: this.#bytesReceived,
      bytesSent: this.#bytesSent,
    };
    for (const r of this.#remotes.values()) {
      for (const n of r.requests) out.requests += n;
      for (const n of Object.values(r.errors)) out.errors += n;
      out.connections += r.connections;
      out.tunnels += r.tunnels;
      out.bytesReceived += r.bytesReceived;
      out.bytesSent += r.bytesSent;
    }
    return out;
  }

  /** This thread's counters, to send to the thread that renders for the whole process. */
  snapshot(): MetricsSnapshot {
    const errors: Record<string, number> = {};
    this.#errorCodes.forEach((code, i) => errors[code] = this.#errors[i]);
    if (this.#errors[MAX_ERROR_CODES] > 0) errors.other = this.#errors[MAX_ERROR_CODES];
    return {
      requests: Array.from(this.#requests),
      bytesReceived: this.#bytesReceived,
      bytesSent: this.#bytesSent,
      upstreamConnects: this.#upstreamConnects,
      upstreamReuses: this.#upstreamReuses,
      errors,
      duration: this.#duration.snapshot(),
      firstByte: this.#firstByte.snapshot(),
      tunnelDuration: this.#tunnelDuration.snapshot(),
      tunnelEnds: Array.from(this.#tunnelEnds),
      refused: Array.from(this.#refused),
      connections: this.#connections,
      tunnels: this.#tunnels,
    };
  }

  /** `local` plus the same value in every other thread's latest snapshot. */
  #sum(local: number, pick: (r: MetricsSnapshot) => number): number {
    for (const r of this.#remotes.values()) local += pick(r);
    return local;
  }

  /** Sets (or, with null, forgets) another thread's latest snapshot; it is added when rendering. */
  setRemote(thread: number, snapshot: MetricsSnapshot | null): void {
    if (snapshot === null) this.#remotes.delete(thread);
    else this.#remotes.set(thread, snapshot);
  }

  /** A client connection was accepted (`waypost_client_connections` up). */
  connectionOpened(): void {
    this.#connections++;
  }

  /** A client connection ended (`waypost_client_connections` down). */
  connectionClosed(): void {
    this.#connections--;
  }

  /** A CONNECT tunnel or upgrade relay began (`waypost_tunnels` up). */
  tunnelOpened(): void {
    this.#tunnels++;
  }

  /** A tunnel ended (`waypost_tunnels` down); how it ended comes with its record. */
  tunnelClosed(): void {
    this.#tunnels--;
  }

  /** A connection was refused: over `maxConnections`, over the per-client limit, or while draining. */
  connectionRefused(reason: RefusalReason): void {
    this.#refused[refusalIndex(reason)]++;
  }

  /**
   * Adds a value read at render time.
   *
   * @throws {TypeError} for an invalid name, a counter not ending in `_total`, or a name already taken.
   */
  addCollector(collector: Collector): void {
    const { name, type } = collector;
    if (!NAME.test(name)) throw new TypeError(`Invalid metric name: ${JSON.stringify(name)}`);
    if (type === "counter" && !name.endsWith("_total")) throw new TypeError(`A counter's name ends in _total: ${name}`);
    if (type !== "counter" && type !== "gauge") throw new TypeError(`Invalid metric type: ${JSON.stringify(type)}`);
    if (BUILT_IN_NAMES.has(name) || this.#collectors.some((c) => c.name === name)) {
      throw new TypeError(`Metric name already taken: ${name}`);
    }
    this.#collectors.push(collector);
  }

  /**
   * Reports an access log's own counters at render time (`waypost_log_lines_dropped_total`,
   * `waypost_log_lines_written_total`): no double bookkeeping.
   */
  watchAccessLog(log: { readonly dropped: number; readonly written: number }): void {
    this.addCollector({
      name: "waypost_log_lines_dropped_total",
      help: "Access log lines dropped because the sink was slower than traffic or failed.",
      type: "counter",
      read: () => log.dropped,
    });
    this.addCollector({
      name: "waypost_log_lines_written_total",
      help: "Access log lines written to the sink.",
      type: "counter",
      read: () => log.written,
    });
  }

  /** Everything, in the text exposition format 0.0.4 (serve it with {@link METRICS_CONTENT_TYPE}). */
  render(): string {
    const out: string[] = [];
    this.#renderProcess(out);
    this.#renderServer(out);
    this.#renderRequests(out);
    this.#renderErrors(out);
    const remotes = [...this.#remotes.values()];
    this.#duration.render(
      out,
      "waypost_request_duration_seconds",
      "Duration of exchanges that are not tunnels.",
      remotes.map((r) => r.duration),
    );
    this.#firstByte.render(
      out,
      "waypost_time_to_first_byte_seconds",
      "Time from the request head to the response head from upstream.",
      remotes.map((r) => r.firstByte),
    );
    this.#tunnelDuration.render(
      out,
      "waypost_tunnel_duration_seconds",
      "Lifetime of CONNECT tunnels and upgrades.",
      remotes.map((r) => r.tunnelDuration),
    );
    this.#renderCollectors(out);
    out.push("");
    return out.join("\n");
  }

  #renderProcess(out: string[]): void {
    gauge(out, "waypost_build_info", "The proxy's version and Deno's, as labels; always 1.", 1, this.#info);
    gauge(
      out,
      "waypost_start_time_seconds",
      "When the metrics registry was made, in seconds since the epoch.",
      this.startedAt / 1000,
    );
    gauge(
      out,
      "process_start_time_seconds",
      "Start time of the process (this thread's runtime) since the epoch, in seconds.",
      performance.timeOrigin / 1000,
    );
    const memory = Deno.memoryUsage();
    gauge(out, "process_resident_memory_bytes", "Resident memory size in bytes.", memory.rss);
    gauge(
      out,
      "waypost_js_heap_total_bytes",
      "JavaScript heap reserved by V8 (this thread), in bytes.",
      memory.heapTotal,
    );
    gauge(out, "waypost_js_heap_used_bytes", "JavaScript heap in use (this thread), in bytes.", memory.heapUsed);
    gauge(
      out,
      "waypost_external_memory_bytes",
      "Memory outside the JavaScript heap held by it (buffers), in bytes.",
      memory.external,
    );
  }

  #renderServer(out: string[]): void {
    const sum = (local: number, pick: (r: MetricsSnapshot) => number) => this.#sum(local, pick);
    gauge(out, "waypost_client_connections", "Client connections open.", sum(this.#connections, (r) => r.connections));
    gauge(out, "waypost_tunnels", "CONNECT tunnels and upgrade relays open.", sum(this.#tunnels, (r) => r.tunnels));
    header(out, "waypost_connections_refused_total", "counter", "Client connections refused, by reason.");
    for (let i = 0; i < REFUSAL_REASONS.length; i++) {
      const n = sum(this.#refused[i], (r) => r.refused[i] ?? 0);
      out.push(`waypost_connections_refused_total{reason="${REFUSAL_REASONS[i]}"} ${formatNumber(n)}`);
    }
  }

  #renderRequests(out: string[]): void {
    header(out, "waypost_requests_total", "counter", "Exchanges and tunnels finished, by kind, method and status.");
    const sum = (local: number, pick: (r: MetricsSnapshot) => number) => this.#sum(local, pick);
    const requests = Float64Array.from(this.#requests, (n, i) => sum(n, (r) => r.requests[i] ?? 0));
    for (let i = 0; i < requests.length; i++) {
      if (requests[i] === 0) continue;
      const code = i % CODES.length;
      const method = Math.floor(i / CODES.length) % METHODS.length;
      const kind = Math.floor(i / (CODES.length * METHODS.length));
      out.push(
        `waypost_requests_total{kind="${KINDS[kind]}",method="${METHODS[method]}",code="${CODES[code]}"} ${
          formatNumber(requests[i])
        }`,
      );
    }
    counter(
      out,
      "waypost_client_bytes_received_total",
      "Bytes read from clients.",
      sum(this.#bytesReceived, (r) => r.bytesReceived),
    );
    counter(
      out,
      "waypost_client_bytes_sent_total",
      "Bytes written to clients.",
      sum(this.#bytesSent, (r) => r.bytesSent),
    );
    counter(
      out,
      "waypost_upstream_connects_total",
      "Exchanges that opened a new upstream connection.",
      sum(this.#upstreamConnects, (r) => r.upstreamConnects),
    );
    counter(
      out,
      "waypost_upstream_reuses_total",
      "Exchanges that reused a pooled upstream connection.",
      sum(this.#upstreamReuses, (r) => r.upstreamReuses),
    );
    header(out, "waypost_tunnel_ends_total", "counter", "Tunnels finished, by how they ended.");
    for (let i = 0; i < TUNNEL_ENDS.length; i++) {
      const n = sum(this.#tunnelEnds[i], (r) => r.tunnelEnds[i] ?? 0);
      out.push(`waypost_tunnel_ends_total{end="${TUNNEL_ENDS[i]}"} ${formatNumber(n)}`);
    }
  }

  #renderErrors(out: string[]): void {
    header(out, "waypost_errors_total", "counter", "Exchanges that ended with an error, by stable error code.");
    // This thread's codes first, then codes only other threads saw; at most MAX_ERROR_CODES, the rest `other`.
    const totals = new Map<string, number>();
    this.#errorCodes.forEach((code, i) => totals.set(code, this.#errors[i]));
    let other = this.#errors[MAX_ERROR_CODES];
    for (const r of this.#remotes.values()) {
      for (const [code, n] of Object.entries(r.errors)) {
        if (code === "other") other += n;
        else if (totals.has(code)) totals.set(code, totals.get(code)! + n);
        else if (totals.size < MAX_ERROR_CODES) totals.set(code, n);
        else other += n;
      }
    }
    for (const [code, n] of totals) out.push(`waypost_errors_total{code="${escapeLabel(code)}"} ${formatNumber(n)}`);
    if (other > 0) out.push(`waypost_errors_total{code="other"} ${formatNumber(other)}`);
  }

  #renderCollectors(out: string[]): void {
    for (const c of this.#collectors) {
      let value: number;
      try {
        value = Number(c.read());
      } catch {
        continue; // one broken collector must not fail the scrape
      }
      if (c.type === "counter") counter(out, c.name, c.help, value);
      else gauge(out, c.name, c.help, value);
    }
  }
}

// ---- Exposition text ----

function header(out: string[], name: string, type: string, help: string): void {
  out.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
}

function gauge(out: string[], name: string, help: string, value: number, labels = ""): void {
  header(out, name, "gauge", help);
  out.push(`${name}${labels} ${formatNumber(value)}`);
}

function counter(out: string[], name: string, help: string, value: number): void {
  header(out, name, "counter", help);
  out.push(`${name} ${formatNumber(value)}`);
}

const LABEL_SPECIAL = /[\\"\n]/;

/** A label value escaped per the exposition format: backslash, double quote and line feed. */
export function escapeLabel(value: string): string {
  if (!LABEL_SPECIAL.test(value)) return value;
  return value.replace(/[\\"\n]/g, (c) => c === "\n" ? "\\n" : `\\${c}`);
}

/** HELP text escaped per the exposition format: backslash and line feed. */
function escapeHelp(text: string): string {
  return text.replace(/[\\\n]/g, (c) => c === "\n" ? "\\n" : "\\\\");
}

/**
 * A sample value as the exposition format takes it, without exponent notation:
 * integers in full, other numbers in JavaScript's shortest form (expanded when
 * that form has an exponent), `+Inf`, `-Inf` and `NaN`.
 */
export function formatNumber(value: number): string {
  if (Number.isInteger(value)) return Math.abs(value) < 1e21 ? String(value) : BigInt(value).toString();
  if (Number.isNaN(value)) return "NaN";
  if (!Number.isFinite(value)) return value > 0 ? "+Inf" : "-Inf";
  const text = String(value);
  const e = text.indexOf("e");
  if (e === -1) return text;
  // Only |value| < 1e-6 gets here (larger non-integers print plainly, and those of 1e21 or more are integers).
  const negative = text[0] === "-";
  const digits = text.slice(negative ? 1 : 0, e).replace(".", "");
  const exponent = Number(text.slice(e + 1));
  return `${negative ? "-" : ""}0.${"0".repeat(-exponent - 1)}${digits}`;
}

// ---- Recent exchanges ----

/**
 * The last few records, for a status page: a fixed ring of references. `add`
 * is O(1) and stores only the reference; `list` makes the newest-first array.
 *
 * @example
 * ```ts
 * import { RecentExchanges } from "./metrics.ts";
 * const recent = new RecentExchanges(100);
 * // startProxy({ hooks: [recent.hooks] }) ... then on the status page:
 * for (const r of recent.list()) console.log(r.method, r.target, r.status);
 * ```
 */
export class RecentExchanges {
  readonly #slots: (ExchangeRecord | null)[];
  /** Where the next record goes. */
  #next = 0;
  #size = 0;

  /**
   * Keeps the last `size` records.
   *
   * @throws {RangeError} unless `size` is a positive integer.
   */
  constructor(size = 50) {
    if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`Invalid ring size: ${size}`);
    this.#slots = new Array<ExchangeRecord | null>(size).fill(null);
  }

  /** How many records are kept at most. */
  get capacity(): number {
    return this.#slots.length;
  }

  /** How many records are kept now. */
  get size(): number {
    return this.#size;
  }

  /** The `onExchangeEnd` consumer that keeps every record. */
  get hooks(): ProxyHooks {
    return { onExchangeEnd: (record) => this.add(record) };
  }

  /** Keeps a record, replacing the oldest when full. */
  add(r: ExchangeRecord): void {
    const slots = this.#slots;
    slots[this.#next] = r;
    if (++this.#next === slots.length) this.#next = 0;
    if (this.#size < slots.length) this.#size++;
  }

  /** The records kept, newest first (a new array). */
  list(): readonly ExchangeRecord[] {
    const slots = this.#slots;
    const out: ExchangeRecord[] = [];
    let i = this.#next;
    for (let n = 0; n < this.#size; n++) {
      i = i === 0 ? slots.length - 1 : i - 1;
      out.push(slots[i]!);
    }
    return out;
  }
}
