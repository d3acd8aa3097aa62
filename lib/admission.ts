/**
 * The admission stage: whether a new client connection is served, by the
 * connection limits (in all and per client address). Over a limit the client
 * gets 503 with `Retry-After` and a close, never a queue.
 *
 * @module
 */
import { closeQuietly, lingeringClose } from "./conn.ts";
import { ProxyError } from "./errors.ts";
import { proxyStatusField } from "./proxy_status.ts";
import { writeAll } from "./writer.ts";
import type { Logger } from "./log.ts";
import { localResponse } from "./respond.ts";

/** What admission decides for a new connection. */
export type AdmissionVerdict = "admit" | "max-connections" | "max-connections-per-client";

/** The limits admission applies. */
export interface AdmissionLimits {
  readonly maxConnections: number;
  readonly maxConnectionsPerClient: number;
}

/** The verdict for a new connection, given the open connections in all and from its address. */
export function admissionVerdict(open: number, fromClient: number, limits: AdmissionLimits): AdmissionVerdict {
  if (open >= limits.maxConnections) return "max-connections";
  if (fromClient >= limits.maxConnectionsPerClient) return "max-connections-per-client";
  return "admit";
}

/** Open connections per client address. */
export class ClientCounts {
  readonly #counts = new Map<string, number>();
  /** Open connections from `address`. */
  get(address: string): number {
    return this.#counts.get(address) ?? 0;
  }
  /** One more connection from `address`. */
  add(address: string): void {
    this.#counts.set(address, this.get(address) + 1);
  }
  /** One connection from `address` ended. */
  remove(address: string): void {
    const left = this.get(address) - 1;
    if (left > 0) this.#counts.set(address, left);
    else this.#counts.delete(address);
  }
}

/**
 * Lingering refusals at once at most (each up to LINGER: 1 s, 64 MiB); past it a refusal is
 * answered and closed at once, so a flood of connections cannot pile up lingering ones.
 */
export const MAX_LINGERING_REFUSALS = 64;

/**
 * Answers 503 with `Retry-After` and `Proxy-Status`, then a lingering
 * close (a request the client already sent is read and dropped, so the close
 * does not reset the answer away) unless `linger` is false. Resolves when the
 * connection is closed.
 */
export async function refuse(
  conn: Deno.TcpConn,
  why: Exclude<AdmissionVerdict, "admit">,
  options: {
    logger: Logger;
    proxyName: string;
    details: boolean;
    linger: boolean;
    /** The client (from a PROXY header), else the socket's peer. */
    client?: { hostname: string; port: number } | null;
  },
): Promise<void> {
  const a = options.client ?? conn.remoteAddr as Deno.NetAddr;
  options.logger.log("warn", why, { client: `${a.hostname}:${a.port}` });
  const error = new ProxyError("Too many connections to the proxy", { status: 503, code: why });
  const bytes = localResponse(503, {
    body: "Too many connections to the proxy\n",
    close: true,
    fields: [["Retry-After", "1"], proxyStatusField(options.proxyName, error, options.details)],
  });
  try {
    await writeAll(conn, bytes);
  } catch {
    // The client left already: the close below is all that is left to do.
  }
  if (!options.linger) {
    closeQuietly(conn);
    return;
  }
  const buf = new Uint8Array(16384);
  await lingeringClose(conn, () => conn.read(buf));
}
