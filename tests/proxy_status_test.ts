/**
 * `Proxy-Status` (RFC 9209) on every answer the proxy writes itself for an
 * error: its name and the registry's error type, `details` only when enabled.
 */
import assert from "node:assert/strict";
import { ForbiddenError, LoopDetectedError, ParseError, UpstreamError, UpstreamTimeoutError } from "../lib/errors.ts";
import { HookError } from "../lib/hooks.ts";
import { proxyErrorType, proxyStatusField, proxyStatusName } from "../lib/proxy_status.ts";
import { fieldValue, get, startOrigin, startTestProxy } from "./util.ts";

Deno.test("proxyErrorType maps the stable codes to RFC 9209 error types", async (t) => {
  const rows: [string, unknown, string][] = [
    ["refused", new UpstreamError("x", "upstream-refused"), "connection_refused"],
    ["lookup", new UpstreamError("x", "upstream-unresolvable"), "dns_error"],
    ["connect timeout", new UpstreamTimeoutError("x", "upstream-connect-timeout"), "connection_timeout"],
    ["response timeout", new UpstreamTimeoutError("x", "upstream-response-timeout"), "http_response_timeout"],
    ["reset", new UpstreamError("x", "upstream-reset"), "connection_terminated"],
    ["truncated head", new UpstreamError("x", "upstream-truncated-head"), "http_response_incomplete"],
    [
      "garbage head",
      new UpstreamError("x", "upstream-bad-response", new ParseError("x", "invalid-status-line")),
      "http_protocol_error",
    ],
    ["loop", new LoopDetectedError(), "proxy_loop_detected"],
    ["port policy", new ForbiddenError("x", "connect-port-denied"), "http_request_denied"],
    ["a malformed request", new ParseError("x", "invalid-target"), "http_request_error"],
    ["a hook", new HookError("onRequest", "failed"), "proxy_internal_error"],
    ["a write to the origin failed", new UpstreamError("x", "upstream-write-failed"), "connection_terminated"],
  ];
  for (const [name, error, type] of rows) {
    await t.step(name, () => assert.equal(proxyErrorType(error as UpstreamError), type));
  }
});

Deno.test("the name is an sf-token or an sf-string; details are an escaped sf-string", () => {
  assert.equal(proxyStatusName("waypost"), "waypost");
  assert.equal(proxyStatusName("proxy.example:3128"), "proxy.example:3128");
  assert.equal(proxyStatusName("*edge"), "*edge");
  // Via tokens may start with a digit or a symbol; an sf-token may not (RFC 8941 §3.3.4).
  assert.equal(proxyStatusName("1proxy"), '"1proxy"');
  assert.equal(proxyStatusName("-edge"), '"-edge"');
  const hostile = new ForbiddenError("x", 'a"b\\c\u00e9');
  assert.equal(proxyStatusField("9p", hostile, true)[1], '"9p"; error=http_request_denied; details="a\\"b\\\\c?"');
});

Deno.test("the proxy's own error answers carry Proxy-Status", async (t) => {
  await t.step("502 refused, 400, 508", async () => {
    await using proxy = startTestProxy();
    const refused = await proxy.roundTrip(get("http://127.0.0.1:1/"));
    assert.equal(refused.status, 502);
    assert.equal(fieldValue(refused.fields, "proxy-status"), "waypost; error=connection_refused");
    const bad = await proxy.roundTrip("GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert.equal(fieldValue(bad.fields, "proxy-status"), "waypost; error=http_request_error");
    await using origin = startOrigin(async () => {});
    const loop = await proxy.roundTrip(get(origin.url("/"), ["Via: 1.1 waypost"]));
    assert.equal(loop.status, 508);
    assert.equal(fieldValue(loop.fields, "proxy-status"), "waypost; error=proxy_loop_detected");
  });
  await t.step("details only when enabled; the name is the via pseudonym", async () => {
    await using proxy = startTestProxy({ proxyStatusDetails: true, via: "edge-1" });
    const refused = await proxy.roundTrip(get("http://127.0.0.1:1/"));
    assert.equal(
      fieldValue(refused.fields, "proxy-status"),
      'edge-1; error=connection_refused; details="upstream-refused"',
    );
  });
  await t.step("503 at the connection limit", async () => {
    await using proxy = startTestProxy({ maxConnectionsPerClient: 1 });
    await using first = await proxy.connect();
    await first.write("G"); // holds the one allowed connection
    await new Promise((r) => setTimeout(r, 50));
    await using second = await proxy.connect();
    const res = await second.response();
    assert.equal(res.status, 503);
    assert.equal(fieldValue(res.fields, "proxy-status"), "waypost; error=proxy_internal_response");
  });
  await t.step("an onError page gets one unless the hook set its own", async () => {
    await using proxy = startTestProxy({ hooks: { onError: (e) => ({ status: e.status, body: "custom" }) } });
    const res = await proxy.roundTrip(get("http://127.0.0.1:1/"));
    assert.equal(fieldValue(res.fields, "proxy-status"), "waypost; error=connection_refused");
  });
});
