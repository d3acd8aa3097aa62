/**
 * What the stages of an exchange share: the server-wide context and the
 * client side of one connection (its reader, counters, deadlines, and the hook
 * state of the exchange in progress).
 *
 * @module
 */
import type { ChunkedLimits } from "./chunked.ts";
import type { HeadLimits } from "./head.ts";
import type { HookRequest } from "./hook_messages.ts";
import type { HookWatch } from "./hook_runner.ts";
import type { ComposedHooks, HookContext } from "./hooks.ts";
import type { Logger } from "./log.ts";
import type { PageState } from "./pages.ts";
import type { Credentials, FailureDelay } from "./auth.ts";
import type { DestinationPolicy } from "./rules.ts";
import type { NoProxyRule, ParentProxy } from "./parent.ts";
import type { ResolvedOptions } from "./options.ts";
import type { ConnReader } from "./reader.ts";
import type { RecordDraft } from "./record.ts";
import type { UpstreamConn, UpstreamPool } from "./upstream.ts";
import type { Writable } from "./writer.ts";

/** What an exchange needs from the server. */
export interface ExchangeContext {
  readonly options: ResolvedOptions;
  readonly limits: HeadLimits;
  /** Limits for response heads from origins (looser than for requests). */
  readonly responseLimits: HeadLimits;
  /** Chunked framing limits for request bodies (trailers use the request head limits). */
  readonly chunkedLimits: ChunkedLimits;
  /** Chunked framing limits for response bodies (trailers use the response head limits). */
  readonly responseChunkedLimits: ChunkedLimits;
  readonly pool: UpstreamPool;
  readonly logger: Logger;
  /** The user's hooks, composed; null when none are set (the hook-free path runs). */
  readonly hooks: ComposedHooks | null;
  /** True once the server is shutting down: responses then close the connection. */
  readonly stopping: boolean;
  /** Aborted when the shutdown grace period is over: tunnels end as "aborted". */
  readonly abortSignal: AbortSignal;
  /** How often the server's sweeper ticks the coarse clock and checks deadlines (ms). */
  readonly tickMs: number;
  /** How long an asynchronous hook may take (0: no limit). */
  readonly hookTimeoutMs: number;
  /** What the proxy's own pages read (metrics, recent exchanges, admin ranges, draining). */
  readonly pages: PageState;
  /** The users who may use the proxy, or null when it asks no one. */
  readonly credentials: Credentials | null;
  /** Failures in a row per client address (each slows the next 407). */
  readonly authFailures: FailureDelay;
  /** The `Proxy-Authenticate` challenge. */
  readonly authChallenge: string;
  /** Where requests may go (checked before every dial). */
  readonly destinations: DestinationPolicy;
  /** The parent proxy, or null: direct. */
  readonly parent: ParentProxy | null;
  /** Destinations that skip the parent. */
  readonly noProxy: readonly NoProxyRule[];
  /** True on the admin port: only the proxy's own pages are served. */
  readonly adminOnly: boolean;
}

/** The hook state of one exchange. */
export interface ExchangeHooks {
  /** The context every hook of the exchange receives. */
  readonly ctx: HookContext;
  /** The request as hooks see it, once made (absolute-form requests only). */
  req: HookRequest | null;
  /** Set once onResponse ran: the exchange then never goes to onError (exactly one of the two). */
  responded: boolean;
}

/** The client side of an exchange. */
export interface ClientSide extends HookWatch {
  readonly conn: Deno.TcpConn;
  /** The client's address when it is not the socket's (a PROXY protocol header), or once asked for; else null. */
  readonly client: { hostname: string; port: number } | null;
  /** The address the client reached when a PROXY header said (the balancer's front), else null. */
  readonly local: { hostname: string; port: number } | null;
  readonly reader: ConnReader;
  /** Writes to the client (a `CountingWriter` when exchange records are made). */
  readonly out: Writable;
  /** Bytes written to the client on this connection (heads and bodies; 0 when not counted). */
  readonly written: number;
  /** Set once a final response head has been written (errors can no longer be reported). */
  finalHeadSent: boolean;
  /** The upstream connection in use, so a forced shutdown can close it. */
  upstream: Deno.Conn | null;
  /**
   * An upstream connection that carried connection-oriented authentication (NTLM,
   * Negotiate): it belongs to this client connection only, never to the shared pool.
   */
  pinned: UpstreamConn | null;
  /** True while a body is streaming either way (the body idle timeout applies). */
  inBody: boolean;
  /** `coarseNow()` (clock.ts) of the last body byte either way. */
  activity: number;
  /** Deadline (clock.ts `deadlineIn`) for the origin's response head; 0 when not waiting. */
  responseDeadline: number;
  /** Set by the server when `responseDeadline` passed (the upstream was closed). */
  responseTimedOut: boolean;
  /** Notices a client reset while a response head is awaited (made on first use). */
  resetWatch?: ResetWatch;
  /** What the exchange record needs (reused per exchange). */
  readonly draft: RecordDraft;
  /** Hook state of the exchange in progress; null without hooks. */
  hook: ExchangeHooks | null;
  /** A hook's body stream being sent (cancelled by the body timeout and a forced shutdown). */
  stream: { cancel(): void } | null;
}

/**
 * The client's next read is started as soon as a request is out, so that a reset
 * while the origin is still working abandons the origin request at once. Its
 * handler lives as long as that read, possibly long after the exchange (an idle
 * keep-alive connection), so it is made once per connection and holds nothing
 * of the exchange but the upstream connection while the head is awaited.
 */
export interface ResetWatch {
  /** The upstream connection to close on a client reset; null when not awaiting a head. */
  upstream: Deno.Conn | null;
  /** Set when the client reset while the head was awaited. */
  gone: boolean;
  readonly onError: () => void;
}
