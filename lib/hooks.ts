/**
 * The public hook contract: what a TypeScript user plugs into the stages of an
 * exchange (request policy, response head, CONNECT policy, error answers, the
 * end-of-exchange record), and how several hook objects are composed into one.
 *
 * Composition runs the hooks in the order given; the first one that answers
 * wins and the rest are skipped. A synchronous hook costs no promise: each hook
 * is called, and the chain only becomes asynchronous when one returns a thenable.
 *
 * @module
 */
import { ProxyError } from "./errors.ts";
// deno-lint-ignore no-unused-vars
import type { startProxy } from "./server.ts";
import type { Field } from "./fields.ts";
import type { TunnelEnd } from "./tunnel.ts";

/**
 * A value or a promise of it: every hook may be synchronous (no promise is
 * made for it) or asynchronous.
 *
 * @example
 * ```ts
 * import type { Awaitable } from "../mod.ts";
 * const now: Awaitable<number> = 1;
 * const later: Awaitable<number> = Promise.resolve(2);
 * ```
 */
export type Awaitable<T> = T | PromiseLike<T>;

/**
 * A response the proxy writes itself (a hook's answer). A web `Response` is
 * accepted too; its body streams. Framing (`Content-Length`,
 * `Transfer-Encoding`) and connection fields are the proxy's and are replaced.
 *
 * @example
 * ```ts
 * import type { Reply } from "../mod.ts";
 * const denied: Reply = { status: 403, headers: { "Content-Type": "text/plain" }, body: "Not here\n" };
 * const web: Reply = new Response("moved", { status: 302, headers: { Location: "http://127.0.0.1/" } });
 * ```
 */
export type Reply = Response | {
  /** Status code, 200-599. */
  status: number;
  /** Reason phrase (default: the standard one for the status). */
  reason?: string;
  /** Header fields; framing fields (`Content-Length`, `Transfer-Encoding`) and hop-by-hop fields are the proxy's. */
  headers?: HeadersInit;
  /** The body (a string is sent as UTF-8). */
  body?: string | Uint8Array;
};

/**
 * Where a request or tunnel goes.
 *
 * @example
 * ```ts
 * import type { ProxyHooks } from "../mod.ts";
 * // Send every request for old.test to a local replacement; Host stays "old.test".
 * const hooks: ProxyHooks = {
 *   onRequest(req) {
 *     if (req.destination.hostname === "old.test") Object.assign(req.destination, { hostname: "127.0.0.1", port: 8080 });
 *   },
 * };
 * ```
 */
export interface Destination {
  /** Host name or IP address (IPv6 without brackets). */
  hostname: string;
  /** TCP port. */
  port: number;
}

/**
 * The client's address.
 *
 * @example
 * ```ts
 * import type { ClientAddress } from "../mod.ts";
 * const show = (a: ClientAddress) => a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
 * ```
 */
export interface ClientAddress {
  /** The client's IP address. */
  readonly hostname: string;
  /** The client's port. */
  readonly port: number;
}

/**
 * What every hook of one exchange shares.
 *
 * @example
 * ```ts
 * import type { ProxyHooks } from "../mod.ts";
 * // Time each exchange from onRequest to onResponse with ctx.locals.
 * const hooks: ProxyHooks = {
 *   onRequest(_req, ctx) {
 *     ctx.locals.started = performance.now();
 *   },
 *   onResponse(res, _req, ctx) {
 *     res.headers.set("Server-Timing", `proxy;dur=${performance.now() - (ctx.locals.started as number)}`);
 *   },
 * };
 * ```
 */
export interface HookContext {
  /** The client's address. */
  readonly client: ClientAddress;
  /** The same for every exchange on one client connection. */
  readonly connectionId: number;
  /** Per exchange, shared by that exchange's hooks (for example a start time set in `onRequest`). */
  readonly locals: Record<string, unknown>;
  /** Aborted when the client connection ends or the proxy stops. */
  readonly signal: AbortSignal;
}

/**
 * The body methods shared by {@link ProxyRequest} and {@link ProxyResponse}.
 * A body streams unless a hook asks for it; after `setBody` or `pipeThrough`
 * the proxy chooses the framing.
 *
 * @example
 * ```ts
 * import type { ProxyHooks } from "../mod.ts";
 * // Upper-case text/plain responses as they stream.
 * const hooks: ProxyHooks = {
 *   onResponse(res) {
 *     if (!res.headers.get("content-type")?.startsWith("text/plain")) return;
 *     const dec = new TextDecoder();
 *     const enc = new TextEncoder();
 *     res.pipeThrough(new TransformStream({ transform: (chunk, c) => c.enqueue(enc.encode(dec.decode(chunk, { stream: true }).toUpperCase())) }));
 *   },
 * };
 * ```
 */
export interface MessageBodyAccess {
  /**
   * Reads the whole body as UTF-8 text (default cap 1 MiB). The body is still
   * forwarded afterwards (now with a Content-Length).
   *
   * @throws {BodyTooLargeError} when the body is longer than `maxBytes`.
   */
  text(maxBytes?: number): Promise<string>;
  /** Reads the whole body as bytes (default cap 1 MiB); see {@link MessageBodyAccess.text}. */
  bytes(maxBytes?: number): Promise<Uint8Array>;
  /**
   * Replaces the body (null: an empty body). The proxy chooses the framing:
   * Content-Length when the length is known, else chunked (close-delimited for an
   * HTTP/1.0 client).
   *
   * @throws {TypeError} for a response to HEAD or with status 204 or 304, which has no body.
   */
  setBody(body: string | Uint8Array | ReadableStream<Uint8Array> | null): void;
  /** Streams the body through `transform` (bytes in, bytes out); may be called more than once. */
  pipeThrough(transform: TransformStream<Uint8Array, Uint8Array>): void;
}

/**
 * An absolute-form request about to be forwarded.
 *
 * @example
 * ```ts
 * import type { ProxyHooks } from "../mod.ts";
 * const hooks: ProxyHooks = {
 *   onRequest(req) {
 *     req.headers.delete("cookie");
 *     if (req.url.pathname.startsWith("/old/")) req.url.pathname = req.url.pathname.replace("/old/", "/new/");
 *   },
 * };
 * ```
 */
export interface ProxyRequest extends MessageBodyAccess {
  /** The request method, case preserved. */
  readonly method: string;
  /**
   * The absolute target. Changing its path or query (`url.pathname`, `url.search`)
   * changes the request-target sent to the origin; where the proxy connects is
   * {@link ProxyRequest.destination}.
   */
  readonly url: URL;
  /** Where the proxy connects; writable (the `Host` field is kept unless a hook changes it). */
  readonly destination: Destination;
  /** A live view of the fields to be forwarded: get/set/append/delete/has. */
  readonly headers: Headers;
  /** The same fields as `[name, value]` pairs, in wire order and case; may be edited in place. */
  readonly fields: Field[];
}

/**
 * The origin's response at its head, before anything is written to the client.
 *
 * @example
 * ```ts
 * import type { ProxyHooks } from "../mod.ts";
 * const hooks: ProxyHooks = {
 *   async onResponse(res) {
 *     res.headers.set("X-Proxied-By", "waypost");
 *     if (res.headers.get("content-type") === "application/json") {
 *       res.setBody(JSON.stringify({ wrapped: JSON.parse(await res.text()) }));
 *     }
 *   },
 * };
 * ```
 */
export interface ProxyResponse extends MessageBodyAccess {
  /** Status code (writable, 200-599). */
  status: number;
  /** Reason phrase (writable). */
  reason: string;
  /** A live view of the fields to be sent to the client. */
  readonly headers: Headers;
  /** The same fields as `[name, value]` pairs, in wire order and case. */
  readonly fields: Field[];
}

/**
 * A CONNECT request before its tunnel is dialled.
 *
 * @example
 * ```ts
 * import type { ProxyHooks } from "../mod.ts";
 * const hooks: ProxyHooks = { onConnect: (req) => req.port === 443 || req.port === 8443 ? "allow" : "deny" };
 * ```
 */
export interface ConnectRequest {
  /** Target host (IPv6 without brackets). */
  readonly hostname: string;
  /** Target port. */
  readonly port: number;
  /** The request's fields (read-only copy). */
  readonly headers: Headers;
}

/**
 * An `onConnect` verdict: `"allow"` overrides the port policy, `"deny"` answers
 * 403, a {@link Reply} is written as the answer (then the connection closes),
 * `redirect` dials another host instead. Nothing: the port policy decides.
 *
 * @example
 * ```ts
 * import type { ConnectDecision, ConnectRequest } from "../mod.ts";
 * function decide(req: ConnectRequest): ConnectDecision | void {
 *   if (req.headers.get("proxy-authorization") === null) {
 *     return { status: 407, headers: { "Proxy-Authenticate": 'Basic realm="proxy"' } };
 *   }
 *   if (req.hostname === "legacy.test") return { redirect: { hostname: "127.0.0.1", port: 8443 } };
 * }
 * ```
 */
export type ConnectDecision = "allow" | "deny" | Reply | { redirect: Destination };

/**
 * How a tunnel ended.
 *
 * @example
 * ```ts
 * import type { TunnelEndRecord } from "../mod.ts";
 * const clean = (t: TunnelEndRecord) => t.end === "closed";
 * ```
 */
export interface TunnelEndRecord {
  /** Both FINs (`closed`), a reset, the idle timeout, or shutdown. */
  end: TunnelEnd;
  /** Which side sent the first FIN, if any. */
  firstFin: "client" | "origin" | null;
}

/**
 * Everything a log line or a metric needs about one exchange or tunnel.
 *
 * @example
 * ```ts
 * import type { ExchangeRecord, ProxyHooks } from "../mod.ts";
 * const counts = new Map<number, number>();
 * const hooks: ProxyHooks = {
 *   onExchangeEnd(r: ExchangeRecord) {
 *     counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
 *   },
 * };
 * ```
 */
export interface ExchangeRecord {
  /** `http`: forwarded; `connect`: a CONNECT tunnel; `upgrade`: a 101 relay; `local`: answered by the proxy. */
  kind: "http" | "connect" | "upgrade" | "local";
  /** Request method ("" when no request head was read). */
  method: string;
  /** The request-target as received. */
  target: string;
  /** Status sent to the client; 0 when none was sent. */
  status: number;
  /** The client's address. */
  client: ClientAddress;
  /** Address and port actually connected to, or null. */
  upstream: { hostname: string; port: number } | null;
  /** Whether the upstream connection came from the pool. */
  reused: boolean;
  /** Bytes read from the client for this exchange (head and body as on the wire). */
  bytesFromClient: number;
  /** Bytes written to the client for this exchange (head and body as on the wire). */
  bytesToClient: number;
  /** Milliseconds: connecting upstream, until the response head, and in all; null where a phase did not happen. */
  timings: { connect: number | null; firstByte: number | null; total: number };
  /** The stable error code, or null. */
  error: string | null;
  /** For tunnels: who closed first and how it ended. */
  tunnelEnd: TunnelEndRecord | null;
  /** The client connection's id (same as {@link HookContext.connectionId}). */
  connectionId: number;
  /** The `Content-Type` of the response sent to the client, or null (for logs such as Squid's `%mt`). */
  contentType: string | null;
  /** When the exchange ended, in ms since the epoch. */
  endedAt: number;
  /** The user who authenticated with `Proxy-Authorization` (when the proxy asks for it), or null. */
  user?: string | null;
  /** True when the exchange went through the parent proxy (`upstream` is then the parent's address). */
  viaParent?: boolean;
}

/**
 * The hook points of an exchange. Every member is optional; pass one object or
 * an array of them as `hooks` to {@link startProxy}. A hook answers by
 * returning a {@link Reply} (the first hook that answers wins), fails the
 * exchange by throwing (500, or the status of a {@link ProxyError} thrown on
 * purpose), or returns nothing to let the exchange go on.
 *
 * @example
 * ```ts
 * import { type ProxyHooks, startProxy } from "../mod.ts";
 * const hooks: ProxyHooks = {
 *   onRequest(req) {
 *     if (req.destination.hostname.endsWith(".ads.test")) return { status: 403, body: "Blocked\n" };
 *   },
 *   onError(error) {
 *     return { status: error.status, headers: { "Content-Type": "text/html" }, body: `<h1>${error.status}</h1>` };
 *   },
 * };
 * const proxy = startProxy({ port: 0, hooks });
 * await proxy.shutdown();
 * ```
 */
export interface ProxyHooks {
  /** Before anything is sent upstream, for every absolute-form request (not CONNECT). */
  onRequest?(req: ProxyRequest, ctx: HookContext): Awaitable<Reply | void>;
  /** When the origin's final response head has arrived, before anything is written to the client. */
  onResponse?(res: ProxyResponse, req: ProxyRequest, ctx: HookContext): Awaitable<Reply | void>;
  /** Before a CONNECT tunnel is dialled. */
  onConnect?(req: ConnectRequest, ctx: HookContext): Awaitable<ConnectDecision | void>;
  /** Before the proxy writes an answer of its own for an error (400, 408, 414, 431, 403, 502, 504, 508, ...). */
  onError?(error: ProxyError, ctx: HookContext, req?: ProxyRequest): Awaitable<Reply | void>;
  /** When an exchange or tunnel is over, with everything a log line or a metric needs. */
  onExchangeEnd?(record: ExchangeRecord): void;
}

/**
 * The names of the hooks (as used in {@link HookError} codes).
 *
 * @example
 * ```ts
 * import type { HookName } from "../mod.ts";
 * const name: HookName = "onRequest";
 * ```
 */
export type HookName = "onRequest" | "onResponse" | "onConnect" | "onError" | "onExchangeEnd";

const CODE_NAMES: Readonly<Record<HookName, string>> = {
  onRequest: "on-request",
  onResponse: "on-response",
  onConnect: "on-connect",
  onError: "on-error",
  onExchangeEnd: "on-exchange-end",
};

/**
 * A hook threw, rejected, did not settle within `hookTimeoutMs`, or returned
 * something the proxy cannot send: 500. The code names the hook and the failure,
 * for example `hook-on-request-failed`, `hook-on-response-timeout`,
 * `hook-on-request-invalid`.
 *
 * @example
 * ```ts
 * import { HookError } from "../mod.ts";
 * const e = new HookError("onRequest", "timeout");
 * console.assert(e.status === 500 && e.code === "hook-on-request-timeout");
 * ```
 */
export class HookError extends ProxyError {
  /** Which hook failed. */
  readonly hook: HookName;
  /** Creates a 500 error naming the hook. */
  constructor(hook: HookName, failure: "failed" | "timeout" | "invalid", cause?: unknown) {
    const what = failure === "timeout"
      ? "did not settle in time"
      : failure === "invalid"
      ? "returned an invalid value"
      : "failed";
    super(`The proxy's ${hook} hook ${what}`, { status: 500, code: `hook-${CODE_NAMES[hook]}-${failure}`, cause });
    this.hook = hook;
  }
}

/**
 * A body read by `text()` / `bytes()` is longer than the cap asked for: 413
 * for a request body, 502 for a response body, unless the hook catches it.
 *
 * @example
 * ```ts
 * import { BodyTooLargeError, type ProxyHooks } from "../mod.ts";
 * const hooks: ProxyHooks = {
 *   async onRequest(req) {
 *     try {
 *       await req.text(64 * 1024);
 *     } catch (error) {
 *       if (error instanceof BodyTooLargeError) return { status: 413, body: "Too large for this proxy\n" };
 *       throw error;
 *     }
 *   },
 * };
 * ```
 */
export class BodyTooLargeError extends ProxyError {
  /** Creates the error: 413 for a request body, 502 for a response body. */
  constructor(message: string, status: 413 | 502) {
    super(message, { status, code: "body-too-large" });
  }
}

/** Several hook objects composed into one call per hook point (null where none is set). */
export interface ComposedHooks {
  readonly onRequest: ((req: ProxyRequest, ctx: HookContext) => Awaitable<Reply | void>) | null;
  readonly onResponse: ((res: ProxyResponse, req: ProxyRequest, ctx: HookContext) => Awaitable<Reply | void>) | null;
  readonly onConnect: ((req: ConnectRequest, ctx: HookContext) => Awaitable<ConnectDecision | void>) | null;
  readonly onError: ((error: ProxyError, ctx: HookContext, req?: ProxyRequest) => Awaitable<Reply | void>) | null;
  readonly onExchangeEnd: ((record: ExchangeRecord) => void) | null;
}

/** Whether `value` is a thenable (a promise or any PromiseLike). */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && (typeof value === "object" || typeof value === "function") &&
    typeof (value as { then?: unknown }).then === "function";
}

/**
 * Calls `fns` in order until one answers (returns something other than
 * undefined). Stays synchronous while every hook does; from the first thenable
 * on, the rest of the chain runs after it settles.
 */
function firstAnswer<R>(
  fns: readonly ((...args: unknown[]) => unknown)[],
  args: unknown[],
): R | undefined | Promise<R | undefined> {
  for (let i = 0; i < fns.length; i++) {
    const result = fns[i](...args);
    if (isThenable(result)) return continueAsync<R>(fns, args, i, result);
    if (result !== undefined && result !== null) return result as R;
  }
  return undefined;
}

async function continueAsync<R>(
  fns: readonly ((...args: unknown[]) => unknown)[],
  args: unknown[],
  at: number,
  pending: PromiseLike<unknown>,
): Promise<R | undefined> {
  const first = await pending;
  if (first !== undefined && first !== null) return first as R;
  for (let i = at + 1; i < fns.length; i++) {
    const result = await fns[i](...args);
    if (result !== undefined && result !== null) return result as R;
  }
  return undefined;
}

type AnyHook = (...args: unknown[]) => unknown;

function collect(list: readonly ProxyHooks[], name: Exclude<HookName, "onExchangeEnd">): AnyHook | null {
  const fns: AnyHook[] = [];
  for (const hooks of list) {
    const fn = hooks[name];
    if (typeof fn === "function") fns.push(fn.bind(hooks) as AnyHook);
  }
  if (fns.length === 0) return null;
  if (fns.length === 1) return fns[0];
  return (...args: unknown[]) => firstAnswer(fns, args);
}

/**
 * Composes one hook object or an array of them (in order; the first hook that
 * answers wins). Returns null when no hook is set, so the proxy runs exactly its
 * hook-free path.
 *
 * @throws {TypeError} when an entry is not an object or a hook is not a function.
 */
export function composeHooks(hooks: ProxyHooks | readonly ProxyHooks[] | undefined | null): ComposedHooks | null {
  if (hooks === undefined || hooks === null) return null;
  const list: readonly ProxyHooks[] = Array.isArray(hooks) ? hooks : [hooks as ProxyHooks];
  for (const entry of list) {
    if (entry === null || typeof entry !== "object") throw new TypeError("Invalid option hooks: expected hook objects");
    for (const name of HOOK_NAMES) {
      const fn = (entry as Record<string, unknown>)[name];
      if (fn !== undefined && typeof fn !== "function") {
        throw new TypeError(`Invalid option hooks: ${name} must be a function`);
      }
    }
  }
  const ends: ((record: ExchangeRecord) => void)[] = [];
  for (const entry of list) if (entry.onExchangeEnd) ends.push(entry.onExchangeEnd.bind(entry));
  const composed: ComposedHooks = {
    onRequest: collect(list, "onRequest") as ComposedHooks["onRequest"],
    onResponse: collect(list, "onResponse") as ComposedHooks["onResponse"],
    onConnect: collect(list, "onConnect") as ComposedHooks["onConnect"],
    onError: collect(list, "onError") as ComposedHooks["onError"],
    // Every onExchangeEnd sees every record (it observes, never answers).
    onExchangeEnd: ends.length === 0 ? null : ends.length === 1 ? ends[0] : (record) => {
      let failure: unknown = null;
      for (const end of ends) {
        try {
          end(record);
        } catch (error) {
          failure ??= error; // the others still see the record; the first failure is reported
        }
      }
      if (failure !== null) throw failure;
    },
  };
  if (
    !composed.onRequest && !composed.onResponse && !composed.onConnect && !composed.onError && !composed.onExchangeEnd
  ) {
    return null;
  }
  return composed;
}

const HOOK_NAMES: readonly HookName[] = ["onRequest", "onResponse", "onConnect", "onError", "onExchangeEnd"];
