/**
 * The end-of-exchange record: the stages note what happened in a draft that
 * each session reuses (no allocation per exchange), and the record stage turns
 * it into an {@link ExchangeRecord} only when someone listens.
 *
 * @module
 */
import type { ClientAddress, ExchangeRecord } from "./hooks.ts";
import type { TunnelStats } from "./tunnel.ts";

/** What the stages of one exchange note for its record. */
export interface RecordDraft {
  kind: ExchangeRecord["kind"];
  /** Status of the final response head written to the client (0: none). */
  status: number;
  /** The upstream connection used (its address is read when the record is made). */
  upstream: Deno.Conn | null;
  reused: boolean;
  /** Whether timings are taken (only when an `onExchangeEnd` listens: `performance.now()` is a runtime call). */
  timed: boolean;
  /** `performance.now()` when the first byte of the request head arrived (0: none did). */
  startedAt: number;
  connectMs: number | null;
  /** When the request head went to the origin, in ms after `startedAt` (null: not sent). */
  sentMs: number | null;
  firstByteMs: number | null;
  error: string | null;
  /** For tunnels: the relay's stats. */
  tunnel: TunnelStats | null;
  /** For tunnels: the client reader's `consumed` and the client's `written` when the relay began. */
  inAtTunnel: number;
  outAtTunnel: number;
  /** The response's Content-Type (noted only when records are made). */
  contentType: string | null;
  /** The authenticated user, or null. */
  user: string | null;
  /** Whether the upstream connection is to the parent proxy. */
  parent: boolean;
}

/** A fresh draft. */
export function newDraft(timed: boolean): RecordDraft {
  return {
    kind: "http",
    status: 0,
    upstream: null,
    reused: false,
    timed,
    startedAt: 0,
    connectMs: null,
    sentMs: null,
    firstByteMs: null,
    error: null,
    tunnel: null,
    inAtTunnel: 0,
    outAtTunnel: 0,
    contentType: null,
    user: null,
    parent: false,
  };
}

/** Resets a draft for the next exchange on the same connection. */
export function resetDraft(d: RecordDraft): void {
  d.kind = "http";
  d.status = 0;
  d.upstream = null;
  d.reused = false;
  d.startedAt = 0;
  d.connectMs = null;
  d.sentMs = null;
  d.firstByteMs = null;
  d.error = null;
  d.tunnel = null;
  d.inAtTunnel = 0;
  d.outAtTunnel = 0;
  d.contentType = null;
  d.user = null;
  d.parent = false;
}

/** Facts about the exchange that only the session knows. */
export interface RecordFacts {
  method: string;
  target: string;
  client: ClientAddress;
  connectionId: number;
  /** The client reader's `consumed` and the client's `written` when the exchange began and now. */
  inStart: number;
  outStart: number;
  inNow: number;
  outNow: number;
}

/** Builds the record from a finished draft. */
export function buildRecord(d: RecordDraft, facts: RecordFacts): ExchangeRecord {
  // One clock read for the total and the wall-clock end (performance.now() is a runtime call).
  const now = performance.now();
  const total = d.startedAt > 0 ? Math.round((now - d.startedAt) * 100) / 100 : 0;
  let upstream: ExchangeRecord["upstream"] = null;
  if (d.upstream !== null) {
    try {
      const a = d.upstream.remoteAddr as Deno.NetAddr;
      upstream = { hostname: a.hostname, port: a.port };
    } catch {
      // The connection is closed and its address gone: the record says null.
    }
  }
  const tunnel = d.tunnel;
  return {
    kind: d.kind,
    method: facts.method,
    target: facts.target,
    status: d.status,
    client: facts.client,
    upstream,
    reused: d.reused,
    // A relay reads and writes past the counters: its own byte counts take over where it began.
    bytesFromClient: tunnel === null ? facts.inNow - facts.inStart : d.inAtTunnel - facts.inStart + tunnel.bytesUp,
    bytesToClient: tunnel === null ? facts.outNow - facts.outStart : d.outAtTunnel - facts.outStart + tunnel.bytesDown,
    timings: { connect: d.connectMs, firstByte: d.firstByteMs, total },
    error: d.error,
    tunnelEnd: tunnel === null ? null : { end: tunnel.end, firstFin: tunnel.firstFin },
    connectionId: facts.connectionId,
    contentType: d.contentType,
    endedAt: Math.round(performance.timeOrigin + now),
    user: d.user,
    viaParent: d.parent,
  };
}
