/**
 * waypost: a forward HTTP/1.1 proxy for Deno (RFC 9110, RFC 9112).
 *
 * @example
 * ```ts
 * import { startProxy } from "./mod.ts";
 * const proxy = startProxy({ port: 0 });
 * console.log(`listening on ${proxy.addr.hostname}:${proxy.addr.port}`);
 * await proxy.shutdown();
 * ```
 *
 * Programming it: hooks run at the stages of every exchange (see {@link ProxyHooks}).
 *
 * @example
 * ```ts
 * import { startProxy } from "./mod.ts";
 * const proxy = startProxy({
 *   port: 0,
 *   hooks: {
 *     onRequest(req) {
 *       req.headers.set("X-Via-Waypost", "1");
 *     },
 *     onExchangeEnd(record) {
 *       console.log(record.status, record.target, record.timings.total);
 *     },
 *   },
 * });
 * await proxy.shutdown();
 * ```
 *
 * @module
 */
export { type ProxyHandle, startProxy } from "./lib/server.ts";
export { DEFAULTS, parseDuration, type ProxyOptions, type ResolvedOptions } from "./lib/options.ts";
export type { TunnelEnd, TunnelStats } from "./lib/tunnel.ts";
export {
  type Collector,
  type HistogramSnapshot,
  Metrics,
  METRICS_CONTENT_TYPE,
  type MetricsSnapshot,
  RecentExchanges,
  type RefusalReason,
} from "./lib/metrics.ts";
export {
  type Awaitable,
  BodyTooLargeError,
  type ClientAddress,
  type ConnectDecision,
  type ConnectRequest,
  type Destination,
  type ExchangeRecord,
  type HookContext,
  HookError,
  type HookName,
  type MessageBodyAccess,
  type ProxyHooks,
  type ProxyRequest,
  type ProxyResponse,
  type Reply,
  type TunnelEndRecord,
} from "./lib/hooks.ts";
export {
  ForbiddenError,
  HeadTooLargeError,
  LoopDetectedError,
  NotImplementedError,
  ParseError,
  PrematureEofError,
  ProxyError,
  type ProxyErrorOptions,
  UpstreamError,
  UpstreamTimeoutError,
  UriTooLongError,
  VersionNotSupportedError,
} from "./lib/errors.ts";
export {
  DEFAULT_HEAD_LIMITS,
  type HeadKind,
  type HeadLimits,
  HeadParser,
  type RequestHead,
  type ResponseHead,
} from "./lib/head.ts";
export { ChunkedDecoder, type ChunkedLimits, DEFAULT_CHUNKED_LIMITS } from "./lib/chunked.ts";
export { contentLength, type Framing, requestFraming, responseFraming } from "./lib/framing.ts";
export { type Field, stripHopByHop } from "./lib/fields.ts";
export { consoleLogger, LOG_LEVELS, type Logger, type LogLevel, silentLogger } from "./lib/log.ts";
export {
  AccessLog,
  type AccessLogOptions,
  type FormatOptions,
  formatRecord,
  LOG_FORMATS,
  type LogFormat,
  type LogSink,
} from "./lib/access_log.ts";
