/**
 * Adding headers: requests get `X-Forwarded-For` with the client's address
 * (appended to any the client sent), responses get `X-Proxied-By`.
 *
 *   deno run --allow-net --allow-read main.ts --hooks examples/add_header.ts
 *
 * @module
 */
import type { ProxyHooks } from "../mod.ts";

const hooks: ProxyHooks = {
  onRequest(req, ctx) {
    const prior = req.headers.get("x-forwarded-for");
    req.headers.set("X-Forwarded-For", prior ? `${prior}, ${ctx.client.hostname}` : ctx.client.hostname);
  },
  onResponse(res) {
    res.headers.set("X-Proxied-By", "waypost");
  },
};

export default hooks;
