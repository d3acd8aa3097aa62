/**
 * Custom error pages: every answer the proxy writes for an error (400, 403,
 * 408, 502, 504, ...) becomes a small HTML page naming the status and the
 * stable error code, with the same status.
 *
 *   deno run --allow-net --allow-read main.ts --hooks examples/error_pages.ts
 *
 * @module
 */
import type { ProxyHooks } from "../mod.ts";

const escape = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

const hooks: ProxyHooks = {
  onError(error, _ctx, req) {
    // Only the proxy's own words and codes go into the page, never request bytes but the URL, escaped.
    const where = req ? `<p>While fetching <code>${escape(req.url.href)}</code></p>` : "";
    const body = `<!doctype html><title>${error.status}</title><h1>${error.status}</h1>` +
      `<p>${escape(error.expose ? error.message : "The proxy could not complete the request.")}</p>` +
      `${where}<p><small>${escape(error.code)}</small></p>\n`;
    return { status: error.status, headers: { "Content-Type": "text/html; charset=utf-8" }, body };
  },
};

export default hooks;
