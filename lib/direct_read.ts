/**
 * Reads from a `Deno.Conn` through the runtime's read op, without
 * `Deno.Conn.read()`'s bookkeeping.
 *
 * `Conn.read()` (Deno 2) adds each read's promise to a `Set` of pending reads
 * on the connection and deletes it when the read settles; the set exists only
 * so that `ref()`/`unref()` can reach reads in flight, which the proxy never
 * uses. Deleting the last element makes V8 shrink the set: it allocates a new
 * 13-slot hash table (120 bytes) in the generation of the old one. Once a
 * connection has waited through two young-generation collections (a kept-alive
 * client between requests, a pooled origin connection, a tunnel), its table is
 * in the old generation, and from then on every read leaves 120 bytes of
 * garbage there that only a full mark-compact reclaims. Under the harness's
 * small-request load that was one mark-compact every 1.2-2 s and about 7 MiB of
 * peak RSS (docs/performance.md, "Old-space garbage from Conn.read()").
 *
 * The op is reached through `Deno[Deno.internal].core.read`, the call
 * `Conn.read()` itself makes, with the connection's resource id from its
 * `Symbol(Deno.internal.rid)` property. Both are internal to the runtime: when
 * either is missing (another runtime version, a test double), reads go through
 * `read()` unchanged. Errors are the op's own (`Conn.read()` only re-throws
 * them), and a read in flight when the connection is closed rejects the same way.
 *
 * @module
 */

/** One read into `buffer`: the count of bytes read, or null (or 0) at EOF. */
export type ReadOnce = (buffer: Uint8Array) => Promise<number | null>;

type OpRead = (rid: number, buffer: Uint8Array) => Promise<number>;

/** The runtime's read op, if this runtime exposes it where Deno 2 does. */
const opRead: OpRead | null = (() => {
  const deno = Deno as unknown as Record<PropertyKey, unknown>;
  const key = deno.internal;
  if (typeof key !== "symbol") return null;
  const core = (deno[key] as { core?: { read?: unknown } } | undefined)?.core;
  return typeof core?.read === "function" ? core.read as OpRead : null;
})();

const RID_DESCRIPTION = "Deno.internal.rid";
/** The resource-id symbol, once seen on a connection (the same one on every connection). */
let ridSymbol: symbol | null = null;

/** The resource id of a runtime connection, or null for anything else. */
function ridOf(conn: object): number | null {
  if (ridSymbol === null) {
    ridSymbol = Object.getOwnPropertySymbols(conn).find((s) => s.description === RID_DESCRIPTION) ?? null;
    if (ridSymbol === null) return null;
  }
  const rid = (conn as Record<symbol, unknown>)[ridSymbol];
  return typeof rid === "number" ? rid : null;
}

/**
 * The read to use on `conn`: the runtime's op on its resource when both are
 * reachable, else `conn.read()`. A result of 0 from the op means EOF, as null
 * does from `read()` (a read into a non-empty buffer never returns 0 otherwise).
 * Buffers must not be empty.
 */
export function readOnceFor(conn: { read(buffer: Uint8Array): Promise<number | null> }): ReadOnce {
  const rid = opRead === null ? null : ridOf(conn);
  if (rid === null) return (buffer) => conn.read(buffer);
  const op = opRead!;
  return (buffer) => op(rid, buffer);
}

/** Whether reads on runtime connections bypass `Conn.read()` in this process (for tests and diagnostics). */
export function directReads(conn: object): boolean {
  return opRead !== null && ridOf(conn) !== null;
}
