/**
 * A CONNECT policy: tunnels only to listed hosts (and their subdomains), on
 * any port; everything else is denied with 403. Plain requests are unaffected.
 *
 *   deno run --allow-net --allow-read main.ts --hooks examples/connect_policy.ts
 *
 * @module
 */
import type { ProxyHooks } from "../mod.ts";

/** Hooks that allow CONNECT to `hosts` only. */
export function connectOnlyTo(hosts: readonly string[]): ProxyHooks {
  const allowed = hosts.map((h) => h.toLowerCase());
  return {
    onConnect(req) {
      const ok = allowed.some((h) => req.hostname === h || req.hostname.endsWith(`.${h}`));
      return ok ? "allow" : "deny";
    },
  };
}

export default connectOnlyTo(["github.com", "registry.npmjs.org", "deno.land"]);
