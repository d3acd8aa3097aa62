/**
 * The proxy's own pages (origin-form requests to the proxy itself): health,
 * metrics after known traffic (exact counts), the status page, PAC and shell
 * lines, who may read which, and that none is ever forwarded.
 */
import assert from "node:assert/strict";
import { echoTarget, fieldValue, get, hasField, startOrigin, startTestProxy, text } from "./util.ts";

const page = (path: string, method = "GET", host = "127.0.0.1") =>
  `${method} ${path} HTTP/1.1\r\nHost: ${host}\r\n${method === "POST" ? "Content-Length: 0\r\n" : ""}\r\n`;

/** The value of one sample line `name{labels} value` in Prometheus text, or null. */
function sample(metrics: string, series: string): number | null {
  for (const line of metrics.split("\n")) {
    if (line.startsWith(series + " ")) return Number(line.slice(series.length + 1));
  }
  return null;
}

Deno.test("/healthz: 200 ok from an admin client, HEAD without a body, never forwarded; 405 and 404 otherwise", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  await using client = await proxy.connect();
  await client.write(page("/healthz"));
  const res = await client.response();
  assert.equal(res.status, 200);
  assert.equal(text(res.body), "ok\n");
  assert.equal(fieldValue(res.fields, "cache-control"), "no-store");
  await client.write(page("/healthz", "HEAD"));
  const head = await client.response("HEAD");
  assert.equal(head.status, 200);
  assert.equal(head.body.length, 0);
  const post = await proxy.roundTrip(page("/healthz", "POST"));
  assert.equal(post.status, 405);
  assert.equal(fieldValue(post.fields, "allow"), "GET, HEAD");
  const other = await proxy.roundTrip(page("/other?x"));
  assert.equal(other.status, 404);
  assert.equal(fieldValue(other.fields, "proxy-status"), "waypost; error=http_request_error");
  assert.equal(origin.conns.length, 0, "a page request was forwarded");
});

Deno.test("/healthz says 503 draining during the drain delay of a graceful shutdown, while the proxy still serves", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy({ drainDelayMs: 400 });
  assert.equal((await proxy.roundTrip(page("/healthz"))).status, 200);
  const stopping = proxy.handle.shutdown(1000);
  const res = await proxy.roundTrip(page("/healthz"));
  assert.equal(res.status, 503);
  assert.equal(text(res.body), "draining\n");
  // Requests are still served until the delay is over.
  assert.equal((await proxy.roundTrip(get(origin.url("/still")))).status, 200);
  await stopping;
  await assert.rejects(proxy.connect(), "the listener is closed after the delay");
});

Deno.test("/metrics: Prometheus text with exact counts after known traffic", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  for (let i = 0; i < 3; i++) assert.equal((await proxy.roundTrip(get(origin.url(`/n${i}`)))).status, 200);
  assert.equal((await proxy.roundTrip(get("http://127.0.0.1:1/"))).status, 502);
  assert.equal(
    (await proxy.roundTrip("BREW http://127.0.0.1:1/ HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n")).status,
    400,
  );
  // Records are made when an exchange ends, just after its last byte: give them a moment.
  await new Promise((r) => setTimeout(r, 50));
  const res = await proxy.roundTrip(page("/metrics"));
  assert.equal(res.status, 200);
  assert.equal(fieldValue(res.fields, "content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const m = text(res.body);
  assert.equal(sample(m, 'waypost_requests_total{kind="http",method="GET",code="200"}'), 3);
  assert.equal(sample(m, 'waypost_requests_total{kind="http",method="GET",code="502"}'), 1);
  assert.equal(sample(m, 'waypost_requests_total{kind="http",method="other",code="400"}'), 1);
  assert.equal(sample(m, 'waypost_errors_total{code="upstream-refused"}'), 1);
  assert.equal(sample(m, 'waypost_errors_total{code="invalid-content-length"}'), 1);
  // Upstream connections are pooled across clients: three requests, one connect, two reuses.
  assert.equal(sample(m, "waypost_upstream_connects_total")! + sample(m, "waypost_upstream_reuses_total")!, 3);
  assert.ok(sample(m, "waypost_upstream_connects_total")! >= 1);
  assert.equal(sample(m, "waypost_request_duration_seconds_count"), 5);
  assert.equal(sample(m, "waypost_client_connections"), 1, "only the scraping connection is open");
  assert.match(m, /^waypost_build_info\{version="[^"]+",deno="[^"]+"\} 1$/m);
  for (const line of m.split("\n")) {
    if (line === "" || line.startsWith("# HELP ") || line.startsWith("# TYPE ")) continue;
    assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [0-9.e+-]+|\+Inf$/, line);
  }
});

Deno.test("/metrics, / and /healthz only for --admin-allow clients; /proxy.pac and /proxy.env for every client", async () => {
  await using proxy = startTestProxy({ adminAllow: ["10.0.0.0/8"] });
  for (const path of ["/metrics", "/", "/healthz"]) {
    const res = await proxy.roundTrip(page(path));
    assert.equal(res.status, 403, path);
    assert.equal(fieldValue(res.fields, "proxy-status"), "waypost; error=http_request_denied");
  }
  assert.equal((await proxy.roundTrip(page("/proxy.pac"))).status, 200);
  assert.equal((await proxy.roundTrip(page("/proxy.env"))).status, 200);
  assert.throws(() => startTestProxy({ adminAllow: ["10.0.0.0/33"] }), TypeError);
});

Deno.test("/proxy.pac: a PAC file a PAC engine evaluates to PROXY host:port; a hostile Host is not written into it", async () => {
  await using proxy = startTestProxy();
  const at = `127.0.0.1:${proxy.port}`;
  const res = await proxy.roundTrip(page("/proxy.pac", "GET", at));
  assert.equal(res.status, 200);
  assert.equal(fieldValue(res.fields, "content-type"), "application/x-ns-proxy-autoconfig");
  // PAC files are JavaScript: evaluate it as a PAC consumer does.
  const find = new Function(`${text(res.body)}; return FindProxyForURL;`)() as (url: string, host: string) => string;
  assert.equal(find("http://example.test/", "example.test"), `PROXY ${at}`);
  const named = await proxy.roundTrip(page("/proxy.pac", "GET", `proxy.corp.test:${proxy.port}`));
  assert.match(text(named.body), new RegExp(`"PROXY proxy\\.corp\\.test:${proxy.port}"`));
  // Hosts the head check lets through but that are no plain name:port fall back to the address reached;
  // the others are refused before any page (400).
  for (const hostile of [`a";alert(1);"b:1`, "x'y:1", "a_b:1", "no-port", `[::1]:99999`, "a.test:1%0a"]) {
    const res = await proxy.roundTrip(page("/proxy.pac", "GET", hostile));
    if (res.status === 400) continue;
    assert.equal(res.status, 200, hostile);
    assert.match(text(res.body), new RegExp(`"PROXY 127\\.0\\.0\\.1:${proxy.port}"`), hostile);
  }
});

Deno.test("/proxy.env: http_proxy, https_proxy and no_proxy in both cases, identical values", async () => {
  await using proxy = startTestProxy();
  const res = await proxy.roundTrip(page("/proxy.env", "GET", `localhost:${proxy.port}`));
  const lines = text(res.body).trim().split("\n");
  const env = Object.fromEntries(lines.map((l) => /^export ([A-Za-z_]+)=(.*)$/.exec(l)!.slice(1)));
  const url = `http://localhost:${proxy.port}`;
  assert.deepEqual(env, {
    http_proxy: url,
    https_proxy: url,
    HTTP_PROXY: url,
    HTTPS_PROXY: url,
    no_proxy: env.NO_PROXY,
    NO_PROXY: env.no_proxy,
  });
  assert.match(env.no_proxy, /localhost/);
});

Deno.test("/: the status page lists recent exchanges, escaped, without query strings", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  await proxy.roundTrip(get(origin.url("/<b>x</b>?secret=1")));
  await new Promise((r) => setTimeout(r, 50));
  const res = await proxy.roundTrip(page("/"));
  assert.equal(res.status, 200);
  assert.equal(fieldValue(res.fields, "content-type"), "text/html; charset=utf-8");
  const html = text(res.body);
  assert.match(html, /<meta http-equiv="refresh" content="5">/);
  assert.ok(!html.includes("<b>x"), "a target is escaped");
  assert.ok(html.includes("/&#60;b&#62;x&#60;/b&#62;?..."), "the target is shown without its query");
  assert.ok(!html.includes("secret"));
  assert.match(html, /<th>requests<\/th><td>1<\/td>/);
});

Deno.test("metrics: false turns counting and the record per exchange off; /metrics says so", async () => {
  await using proxy = startTestProxy({ metrics: false });
  assert.equal(proxy.handle.metrics, null);
  const res = await proxy.roundTrip(page("/metrics"));
  assert.equal(res.status, 404);
});

Deno.test("timingHeader: forwarded responses carry Server-Timing with connect, ttfb, proxy and total", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy({ timingHeader: true, metrics: false });
  await using client = await proxy.connect();
  await client.write(get(origin.url("/a")));
  const first = await client.response();
  const timing = fieldValue(first.fields, "server-timing");
  assert.match(timing, /^connect;dur=[0-9.]+, ttfb;dur=[0-9.]+, proxy;dur=[0-9.]+, total;dur=[0-9.]+$/);
  const dur = (name: string, v: string) => Number(new RegExp(`${name};dur=([0-9.]+)`).exec(v)![1]);
  assert.ok(dur("total", timing) + 0.2 >= dur("connect", timing) + dur("ttfb", timing) + dur("proxy", timing) - 0.2);
  // A reused upstream connection has no connect phase.
  await client.write(get(origin.url("/b")));
  assert.match(fieldValue((await client.response()).fields, "server-timing"), /^ttfb;dur=/);
  await using plain = startTestProxy();
  assert.ok(!hasField((await plain.roundTrip(get(origin.url("/c")))).fields, "server-timing"), "off by default");
});

Deno.test("reconfigure: new values apply to new exchanges, open connections stay; restart-only keys are refused", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  await using client = await proxy.connect();
  await client.write(get(origin.url("/1")));
  assert.match(fieldValue((await client.response()).fields, "via"), /waypost$/);
  proxy.handle.reconfigure({ via: "renamed", adminAllow: ["10.0.0.0/8"], port: 0, hostname: "127.0.0.1" });
  // The same keep-alive connection: its next exchange uses the new options.
  await client.write(get(origin.url("/2")));
  assert.match(fieldValue((await client.response()).fields, "via"), /renamed$/);
  assert.equal((await proxy.roundTrip("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")).status, 403);
  assert.throws(() => proxy.handle.reconfigure({ port: 1 }), /port cannot change without a restart/);
  assert.throws(() => proxy.handle.reconfigure({ metrics: false }), /metrics cannot change/);
  assert.throws(() => proxy.handle.reconfigure({ idleTimeoutMs: -1 }), TypeError);
  // A refused reconfiguration leaves the running one as it was.
  await client.write(get(origin.url("/3")));
  assert.match(fieldValue((await client.response()).fields, "via"), /renamed$/);
});
