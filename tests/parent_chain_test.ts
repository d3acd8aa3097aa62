/**
 * A parent proxy: plain requests in absolute-form over pooled connections
 * with our own credentials, CONNECT through the parent's CONNECT, the
 * parent's refusals relayed with a Proxy-Status member naming our hop,
 * NO_PROXY destinations direct; two waypost instances chain without a 508,
 * while a loop through one instance is still caught.
 */
import assert from "node:assert/strict";
import type { ExchangeRecord } from "../lib/hooks.ts";
import { formatRecord } from "../lib/access_log.ts";
import { closedPort, echoTarget, fieldValue, get, startOrigin, startTestProxy, text } from "./util.ts";

Deno.test("two waypost instances chain: requests and CONNECT through a parent that asks for credentials", async () => {
  await using origin = startOrigin(echoTarget);
  const parentRecords: ExchangeRecord[] = [];
  await using parent = startTestProxy({
    auth: ["child:pw"],
    connectPorts: "*",
    hooks: { onExchangeEnd: (r) => void parentRecords.push(r) },
  });
  const childRecords: ExchangeRecord[] = [];
  await using child = startTestProxy({
    upstreamProxy: `http://child:pw@127.0.0.1:${parent.port}`,
    connectPorts: "*",
    hooks: { onExchangeEnd: (r) => void childRecords.push(r) },
  });
  // Plain requests: absolute-form to the parent, our credentials added, the client's never forwarded.
  await using client = await child.connect();
  for (const path of ["/a", "/b"]) {
    await client.write(get(origin.url(path), ["Proxy-Authorization: Basic Y2xpZW50OnNlY3JldA=="]));
    const res = await client.response();
    assert.equal(res.status, 200);
    assert.equal(text(res.body), `target=${path}`);
    const via = res.fields.filter(([n]) => n.toLowerCase() === "via").map(([, v]) => v).join(", ");
    assert.equal(via, "1.1 waypost, 1.1 waypost");
  }
  const seen = origin.requestLines();
  assert.equal(seen.length, 2);
  const last = origin.requests.at(-1)!;
  const via = last.fields.filter(([n]) => n.toLowerCase() === "via").map(([, v]) => v);
  assert.equal(via.length, 2);
  for (const v of via) assert.match(v, /^1\.1 waypost \([0-9a-f]{8}\)$/);
  assert.notEqual(via[0], via[1], "each instance tags its own entry");
  assert.ok(!last.fields.some(([n]) => n.toLowerCase() === "proxy-authorization"), "credentials reached the origin");
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(parentRecords.map((r) => [r.user, r.target]), [["child", origin.url("/a")], [
    "child",
    origin.url("/b"),
  ]]);
  // The child's records say the exchange went through the parent (Squid's log says FIRSTUP_PARENT).
  assert.ok(childRecords.length >= 2 && childRecords.every((r) => r.viaParent === true));
  assert.equal(childRecords[0].upstream?.port, parent.port);
  assert.match(formatRecord(childRecords[0], "squid"), / FIRSTUP_PARENT\/127\.0\.0\.1 /);
  assert.equal(JSON.parse(formatRecord(childRecords[0], "json")).parent, true);
  assert.equal(parentRecords[1].reused || parentRecords[0].connectionId === parentRecords[1].connectionId, true);
  // CONNECT through both proxies.
  await using tunnel = await child.connect();
  await tunnel.write(`CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\n\r\n`);
  const established = await tunnel.reader.readUntil("\r\n\r\n");
  assert.match(text(established!), /^HTTP\/1\.1 200 /);
  await tunnel.write(`GET /inside HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
  assert.match(text((await tunnel.reader.readUntil("\r\n\r\n"))!), /^HTTP\/1\.1 200 OK\r\nContent-Length: 14\r\n/);
  assert.equal(text(await tunnel.reader.readExact(14)), "target=/inside");
});

Deno.test("the parent's refusals are relayed with Proxy-Status naming our hop; a parent that is down is a 502", async () => {
  await using origin = startOrigin(echoTarget);
  await using parent = startTestProxy({ auth: ["child:pw"], connectPorts: "*" });
  await using child = startTestProxy({
    upstreamProxy: `http://child:wrong@127.0.0.1:${parent.port}`,
    connectPorts: "*",
    proxyStatusDetails: true,
  });
  const res = await child.roundTrip(get(origin.url("/")));
  assert.equal(res.status, 407);
  assert.match(fieldValue(res.fields, "proxy-authenticate"), /^Basic realm="waypost"/);
  assert.match(
    res.fields.filter(([n]) => n.toLowerCase() === "proxy-status").map(([, v]) => v).join(", "),
    new RegExp(
      `waypost; error=http_request_denied.*waypost; received-status=407; next-hop="127\\.0\\.0\\.1:${parent.port}"`,
    ),
  );
  const tunnel = await child.roundTrip(
    `CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\n\r\n`,
    "CONNECT",
  );
  assert.equal(tunnel.status, 407, "a refused CONNECT is relayed too");
  assert.match(text(tunnel.body), /Proxy authentication required/);
  await using orphan = startTestProxy({ upstreamProxy: `http://127.0.0.1:${closedPort()}`, connectPorts: "*" });
  assert.equal((await orphan.roundTrip(get(origin.url("/")))).status, 502);
  assert.equal(origin.conns.length, 0);
});

Deno.test("--no-proxy destinations go direct; others through the parent", async () => {
  await using origin = startOrigin(echoTarget);
  const parentTargets: string[] = [];
  await using parent = startTestProxy({ hooks: { onExchangeEnd: (r) => void parentTargets.push(r.target) } });
  await using child = startTestProxy({
    upstreamProxy: `http://127.0.0.1:${parent.port}`,
    noProxy: `localhost:${origin.port}`,
  });
  assert.equal((await child.roundTrip(get(`http://localhost:${origin.port}/direct`))).status, 200);
  assert.equal((await child.roundTrip(get(origin.url("/via-parent")))).status, 200);
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(parentTargets, [origin.url("/via-parent")]);
});

Deno.test("loop detection recognises this instance, not every instance of the product", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy({ instanceId: "me" });
  const via = async (value: string) => (await proxy.roundTrip(get(origin.url("/"), [`Via: ${value}`]))).status;
  assert.equal(await via("1.1 waypost (me)"), 508, "this instance");
  assert.equal(await via("1.1 waypost (other)"), 200, "another instance");
  assert.equal(await via("1.1 waypost"), 508, "an untagged entry with our name");
  assert.equal(await via("1.1 squid (squid/6.1)"), 200);
});
