/**
 * The destination stage: the last check before the proxy dials. An IP literal
 * (and the numeric IPv4 forms the system resolver accepts) is checked as the
 * address it is; a name, when the policy has IP rules or blocks private
 * addresses, is resolved once, every address it resolves to is checked, and
 * the proxy connects to the address it checked (no second lookup, so DNS
 * rebinding cannot slip past). Without rules nothing is checked and nothing is
 * looked up. A pooled connection is checked by the address it is connected to.
 *
 * @module
 */
import { type IpBytes, parseIp } from "./cidr.ts";
import { ForbiddenError, UpstreamError, UpstreamTimeoutError } from "./errors.ts";
import {
  type DestinationPolicy,
  destinationVerdict,
  hostAddress,
  isOpenPolicy,
  needsAddresses,
  type Verdict,
  verdictBeforeLookup,
} from "./rules.ts";

// node:dns brings in part of the Node compatibility layer (resident memory, and about 50 ms
// of the thread to load): it is loaded only by a process whose policy looks names up, when
// the policy is set (prepareResolver), not during its first request (see docs/performance.md).
let dnsModule: Promise<typeof import("node:dns/promises")> | undefined;

/** The resolver module, loaded once (a failed load is tried again next time). */
function dns(): Promise<typeof import("node:dns/promises")> {
  return dnsModule ??= import("node:dns/promises").catch((error) => {
    dnsModule = undefined;
    throw error;
  });
}

/** Starts loading the resolver when `policy` will look names up (no-op otherwise, or when loaded). */
export function prepareResolver(policy: DestinationPolicy): void {
  if (needsAddresses(policy)) dns().catch(() => {}); // a failure shows at the lookup that needs it
}

function refused(verdict: Verdict, host: string, port: number): ForbiddenError {
  const code = verdict.type === "destination_ip_prohibited" ? "destination-ip-prohibited" : "destination-denied";
  const why = verdict.why === "default"
    ? "no rule allows it (the default is deny)"
    : verdict.why === "private address"
    ? "it is a private, loopback or link-local address (--allow-private lifts this)"
    : `rule "${verdict.why}"`;
  return new ForbiddenError(`The proxy does not go to ${host}:${port}: ${why}`, code);
}

/** An address as text to dial. */
function addressText(a: IpBytes): string {
  if (a.length === 4) return a.join(".");
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((a[i] << 8) | a[i + 1]).toString(16));
  return groups.join(":");
}

/**
 * Checks `host:port` against the policy and returns what to dial: the host
 * itself, the canonical address of a numeric host, or the checked address of
 * a resolved name. With `resolve` false (a parent proxy resolves names) a name
 * is decided by the name rules and the default only.
 *
 * @throws {ForbiddenError} 403 naming the rule (`destination-denied`, `destination-ip-prohibited`).
 * @throws {UpstreamError} 502 when the name does not resolve (`upstream-unresolvable`).
 * @throws {UpstreamTimeoutError} 504 when resolving takes longer than `timeoutMs` (`upstream-connect-timeout`).
 */
export function checkDestination(
  policy: DestinationPolicy,
  host: string,
  port: number,
  resolve = true,
  timeoutMs = 0,
): string | Promise<string> {
  if (isOpenPolicy(policy)) return host;
  const literal = hostAddress(host);
  if (literal !== null) {
    const verdict = destinationVerdict(policy, host, port, literal);
    if (!verdict.allowed) throw refused(verdict, host, port);
    return addressText(literal);
  }
  if (!resolve || !needsAddresses(policy)) {
    const verdict = destinationVerdict(policy, host, port, null);
    if (!verdict.allowed) throw refused(verdict, host, port);
    return host;
  }
  // A name rule that decides before any IP rule could saves the lookup (and a denied name is never looked up).
  const early = verdictBeforeLookup(policy, host, port);
  if (early !== null) {
    if (!early.allowed) throw refused(early, host, port);
    return host;
  }
  return resolveChecked(policy, host, port, timeoutMs);
}

/**
 * Checks a pooled connection about to be reused for `host:port` by the
 * address it is connected to (the rules may have changed since it was opened).
 *
 * @throws {ForbiddenError} as {@link checkDestination}.
 */
export function checkPooled(policy: DestinationPolicy, host: string, port: number, conn: Deno.Conn): void {
  if (isOpenPolicy(policy)) return;
  const address = parseIp((conn.remoteAddr as Deno.NetAddr).hostname);
  const verdict = destinationVerdict(policy, host, port, address);
  if (!verdict.allowed) throw refused(verdict, host, port);
}

async function resolveChecked(
  policy: DestinationPolicy,
  host: string,
  port: number,
  timeoutMs: number,
): Promise<string> {
  let found: { address: string }[];
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    // The lookup cannot be cancelled; the connect timeout bounds how long the exchange waits for it.
    const expired = new Promise<never>((_, reject) => {
      if (timeoutMs > 0) {
        timer = setTimeout(
          () => reject(new UpstreamTimeoutError(`Timed out resolving ${host}`, "upstream-connect-timeout")),
          timeoutMs,
        );
      }
    });
    // Loading the module is inside the race too: the timeout bounds the whole wait.
    const lookup = dns().then((m) => m.lookup(host, { all: true, verbatim: true }));
    found = await Promise.race([lookup, expired]);
  } catch (error) {
    if (error instanceof UpstreamTimeoutError) throw error;
    throw new UpstreamError(`Cannot resolve ${host}`, "upstream-unresolvable", error);
  } finally {
    clearTimeout(timer);
  }
  if (found.length === 0) throw new UpstreamError(`Cannot resolve ${host}`, "upstream-unresolvable");
  // Every address must pass: a name with one address in a refused range is refused.
  for (const { address } of found) {
    const bytes = parseIp(address);
    // An address we cannot read is not dialled (fail closed).
    const verdict: Verdict = bytes === null
      ? { allowed: false, why: "private address", type: "destination_ip_prohibited" }
      : destinationVerdict(policy, host, port, bytes);
    if (!verdict.allowed) throw refused(verdict, host, port);
  }
  return found[0].address;
}
