/**
 * The proxy's own pages: origin-form requests (`GET /metrics`) are addressed
 * to the proxy itself, never forwarded. Pure: each page is an {@link Answer}
 * built from the request, the client's address and the proxy's state.
 *
 * | path | who | what |
 * | --- | --- | --- |
 * | `/healthz` | admin | `200 ok`, or `503 draining` during a graceful shutdown |
 * | `/metrics` | admin | Prometheus text format 0.0.4 |
 * | `/` | admin | an HTML status page that refreshes itself |
 * | `/proxy.pac` | every client | `FindProxyForURL` answering `PROXY host:port` |
 * | `/proxy.env` | every client | `http_proxy`, `https_proxy`, `no_proxy` lines for a shell |
 *
 * Admin pages are for clients in `adminAllow` (default loopback); others get
 * 403. Any other path is 404; a method other than GET or HEAD is 405.
 *
 * @module
 */
import { type Cidr, matchCidr } from "./cidr.ts";
import type { Field } from "./fields.ts";
import type { ExchangeRecord } from "./hooks.ts";
import type { Answer } from "./hook_messages.ts";
import { type Metrics, METRICS_CONTENT_TYPE, type RecentExchanges } from "./metrics.ts";
import { proxyStatusName } from "./proxy_status.ts";
import { REASON } from "./serialize.ts";

/** What the pages read. */
export interface PageState {
  readonly metrics: Metrics | null;
  readonly recent: RecentExchanges | null;
  readonly adminAllow: readonly Cidr[];
  /** True while draining: `/healthz` says 503. */
  readonly draining: boolean;
  /** The proxy's name (`via`), shown on the status page. */
  readonly name: string;
  readonly version: string;
}

/** The request facts a page needs. */
export interface PageRequest {
  readonly method: string;
  /** The origin-form target (`/metrics?x`). */
  readonly target: string;
  /** The Host field's value, or null. */
  readonly host: string | null;
  /** The client's address (as the runtime reports it). */
  readonly client: string;
  /** The address and port the connection reached (the proxy's side of it). */
  readonly local: { hostname: string; port: number };
  /** True on the admin port: only the admin pages are there (the PAC file would name the wrong port). */
  readonly adminPort?: boolean;
}

const encoder = new TextEncoder();

/** The answer for an origin-form request to the proxy itself. */
export function pageAnswer(req: PageRequest, state: PageState): Answer {
  const q = req.target.indexOf("?");
  const path = q === -1 ? req.target : req.target.slice(0, q);
  const found = PAGES[path];
  const page = req.adminPort && found !== undefined && !found.admin ? undefined : found;
  if (page === undefined) {
    const body = `No page ${visible(path)} on this proxy. Send requests in absolute form (http://host/path).\n`;
    return refusal(state, text(404, body), "http_request_error");
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    const answer = refusal(state, text(405, `${path} answers GET and HEAD only.\n`), "http_request_error");
    answer.fields.push(["Allow", "GET, HEAD"]);
    return answer;
  }
  if (page.admin && matchCidr(state.adminAllow, req.client) === null) {
    return refusal(state, text(403, `${path} is for admin clients only (--admin-allow).\n`), "http_request_denied");
  }
  return page.render(req, state);
}

/** A page refused: with `Proxy-Status` like every error answer of the proxy's own. */
function refusal(state: PageState, answer: Answer, type: string): Answer {
  answer.fields.push(["Proxy-Status", `${proxyStatusName(state.name)}; error=${type}`]);
  return answer;
}

interface Page {
  readonly admin: boolean;
  render(req: PageRequest, state: PageState): Answer;
}

const PAGES: Readonly<Record<string, Page>> = Object.freeze({
  "/healthz": {
    admin: true,
    render: (_req: PageRequest, state: PageState) =>
      text(state.draining ? 503 : 200, state.draining ? "draining\n" : "ok\n"),
  },
  "/metrics": {
    admin: true,
    render: (_req: PageRequest, state: PageState) =>
      state.metrics === null
        ? text(404, "Metrics are off (--no-metrics).\n")
        : answer(200, METRICS_CONTENT_TYPE, state.metrics.render()),
  },
  "/": { admin: true, render: (_req: PageRequest, state: PageState) => statusPage(state) },
  "/proxy.pac": {
    admin: false,
    render: (req: PageRequest) => {
      const at = proxyAuthority(req);
      const pac = `function FindProxyForURL(url, host) {\n  return "PROXY ${at}";\n}\n`;
      return answer(200, "application/x-ns-proxy-autoconfig", pac);
    },
  },
  "/proxy.env": {
    admin: false,
    render: (req: PageRequest) => {
      const url = `http://${proxyAuthority(req)}`;
      const noProxy = "localhost,127.0.0.1,::1";
      const lines = [
        `export http_proxy=${url}`,
        `export https_proxy=${url}`,
        `export HTTP_PROXY=${url}`,
        `export HTTPS_PROXY=${url}`,
        `export no_proxy=${noProxy}`,
        `export NO_PROXY=${noProxy}`,
      ];
      return answer(200, "text/plain; charset=utf-8", lines.join("\n") + "\n");
    },
  },
});

/** A Host value that is safe to write into a script or a shell line: a name or IP literal and a port. */
const SAFE_AUTHORITY = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\]):[0-9]{1,5}$/;

/**
 * How clients reach the proxy: the Host the client used (it named the proxy
 * that way), when it is a plain `name:port`; else the address the connection
 * reached.
 */
function proxyAuthority(req: PageRequest): string {
  const host = req.host?.trim() ?? "";
  if (SAFE_AUTHORITY.test(host) && Number(host.slice(host.lastIndexOf(":") + 1)) <= 65535) return host;
  const h = req.local.hostname;
  return `${h.includes(":") ? `[${h}]` : h}:${req.local.port}`;
}

function answer(status: number, type: string, body: string): Answer {
  return {
    status,
    reason: REASON[status] ?? "",
    fields: [["Content-Type", type], ["Cache-Control", "no-store"]] as Field[],
    body: { kind: "bytes", data: encoder.encode(body) },
  };
}

function text(status: number, body: string): Answer {
  return answer(status, "text/plain; charset=utf-8", body);
}

/** Printable ASCII of a client's text (for a plain-text body). */
function visible(s: string): string {
  return s.length > 200 ? `${visible(s.slice(0, 200))}...` : s.replace(/[^\x20-\x7e]/g, "?");
}

function html(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`).replace(/[^\x20-\x7e]/g, "?");
}

function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return d > 0 ? `${d}d ${h}h ${m}m` : h > 0 ? `${h}h ${m}m ${s % 60}s` : `${m}m ${s % 60}s`;
}

/** The target without its query (it may hold secrets), for display. */
function shownTarget(r: ExchangeRecord): string {
  const q = r.target.indexOf("?");
  return q === -1 ? r.target : `${r.target.slice(0, q)}?...`;
}

/** The status page: uptime, live counters and the last exchanges; refreshes itself every 5 s, no script. */
function statusPage(state: PageState): Answer {
  const m = state.metrics;
  const s = m?.summary();
  const rows = (state.recent?.list() ?? []).map((r) =>
    `<tr><td>${new Date(r.endedAt).toISOString().slice(11, 23)}</td><td>${html(r.method || "-")}</td>` +
    `<td class="t">${html(shownTarget(r))}</td><td>${r.status || "-"}</td><td>${r.timings.total.toFixed(1)}</td>` +
    `<td>${html(r.error ?? "")}</td></tr>`
  ).join("\n");
  const counters = s === undefined ? "<p>Metrics are off (--no-metrics).</p>" : `<table class="c">
<tr><th>uptime</th><td>${duration(Date.now() - m!.startedAt)}</td></tr>
<tr><th>requests</th><td>${s.requests}</td></tr>
<tr><th>errors</th><td>${s.errors}</td></tr>
<tr><th>client connections</th><td>${s.connections}</td></tr>
<tr><th>tunnels</th><td>${s.tunnels}</td></tr>
<tr><th>bytes from clients</th><td>${s.bytesReceived}</td></tr>
<tr><th>bytes to clients</th><td>${s.bytesSent}</td></tr>
</table>`;
  const page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="5">
<title>${html(state.name)}: status</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: 2px 10px 2px 0; }
table.x td { border-top: 1px solid #ddd; font-family: ui-monospace, monospace; }
td.t { max-width: 60em; overflow-wrap: anywhere; }
</style>
</head>
<body>
<h1>${html(state.name)} <small>waypost ${html(state.version)}</small></h1>
<p id="state">${state.draining ? "draining" : "serving"}</p>
${counters}
<h2>Last ${state.recent?.size ?? 0} exchanges</h2>
<table class="x">
<tr><th>time (UTC)</th><th>method</th><th>target</th><th>status</th><th>ms</th><th>error</th></tr>
${rows}
</table>
</body>
</html>
`;
  return answer(200, "text/html; charset=utf-8", page);
}
