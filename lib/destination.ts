/**
 * The destination stage: the last check before the proxy dials. Name rules
 * are decided from the name; IP rules and the private-address block from the
 * addresses the name resolves to, all of them, once: the proxy then connects
 * to the address it checked (no second lookup, so DNS rebinding cannot slip
 * past). Without rules nothing is checked and nothing is looked up.
 *
 * @module
 */
import { lookup } from "node:dns/promises";
import { parseIp } from "./cidr.ts";
import { ForbiddenError, UpstreamError } from "./errors.ts";
import { type DestinationPolicy, destinationVerdict, isOpenPolicy, type Verdict } from "./rules.ts";

function refused(verdict: Verdict, host: string, port: number): ForbiddenError {
  const code = verdict.type === "destination_ip_prohibited" ? "destination-ip-prohibited" : "destination-denied";
  const why = verdict.why === "default"
    ? "no rule allows it (the default is deny)"
    : verdict.why === "private address"
    ? "it is a private, loopback or link-local address (--allow-private lifts this)"
    : `rule "${verdict.why}"`;
  return new ForbiddenError(`The proxy does not go to ${host}:${port}: ${why}`, code);
}

/**
 * Checks `host:port` against the policy and returns what to dial: the host
 * itself, or the checked address when the verdict needed the addresses.
 *
 * @throws {ForbiddenError} 403 naming the rule (`destination-denied`, `destination-ip-prohibited`).
 * @throws {UpstreamError} 502 when the name does not resolve (`upstream-unresolvable`).
 */
export function checkDestination(
  policy: DestinationPolicy,
  host: string,
  port: number,
  resolve = true,
): string | Promise<string> {
  if (isOpenPolicy(policy)) return host;
  const first = destinationVerdict(policy, host, port, null);
  if (first !== null) {
    if (!first.allowed) throw refused(first, host, port);
    return host;
  }
  // Through a parent proxy the parent resolves names: IP rules apply to IP-literal destinations only.
  if (!resolve) return host;
  return resolveChecked(policy, host, port);
}

async function resolveChecked(policy: DestinationPolicy, host: string, port: number): Promise<string> {
  let found: { address: string }[];
  try {
    found = await lookup(host, { all: true, verbatim: true });
  } catch (error) {
    throw new UpstreamError(`Cannot resolve ${host}`, "upstream-unresolvable", error);
  }
  if (found.length === 0) throw new UpstreamError(`Cannot resolve ${host}`, "upstream-unresolvable");
  // Every address must pass: a name with one address in a refused range is refused.
  for (const { address } of found) {
    const bytes = parseIp(address);
    const verdict = destinationVerdict(policy, host, port, bytes);
    if (verdict !== null && !verdict.allowed) throw refused(verdict, host, port);
  }
  return found[0].address;
}
