/**
 * Blocking hosts: requests to a listed host (or any of its subdomains) are
 * answered 403 by the proxy, and the origin is never contacted. CONNECT to them
 * is denied too.
 *
 *   deno run --allow-net --allow-read main.ts --hooks examples/block_hosts.ts
 *
 * @module
 */
import type { ProxyHooks } from "../mod.ts";

/** Hooks that refuse `hosts` and their subdomains. */
export function blockHosts(hosts: readonly string[]): ProxyHooks {
  const blocked = hosts.map((h) => h.toLowerCase());
  const isBlocked = (hostname: string) => blocked.some((h) => hostname === h || hostname.endsWith(`.${h}`));
  return {
    onRequest(req) {
      if (!isBlocked(req.destination.hostname)) return;
      return { status: 403, headers: { "Content-Type": "text/plain" }, body: "Blocked by the proxy's policy\n" };
    },
    onConnect(req) {
      if (isBlocked(req.hostname)) return "deny";
    },
  };
}

export default blockHosts(["ads.example", "tracker.example"]);
