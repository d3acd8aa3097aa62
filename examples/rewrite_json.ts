/**
 * Rewriting a JSON response: uncompressed `application/json` bodies up to
 * 1 MiB are parsed, given a `"proxied": true` member, and sent on with a new
 * Content-Length. Anything else streams through untouched.
 *
 *   deno run --allow-net --allow-read main.ts --hooks examples/rewrite_json.ts
 *
 * @module
 */
import type { ProxyHooks } from "../mod.ts";

const hooks: ProxyHooks = {
  async onResponse(res) {
    const type = res.headers.get("content-type") ?? "";
    if (!/^application\/json\b/i.test(type) || res.headers.has("content-encoding")) return;
    let data: unknown;
    try {
      data = JSON.parse(await res.text(1024 * 1024));
    } catch {
      return; // not JSON after all (or too large): the bytes read are still sent as they came
    }
    if (data === null || typeof data !== "object" || Array.isArray(data)) return;
    res.setBody(JSON.stringify({ ...data, proxied: true }));
  },
};

export default hooks;
