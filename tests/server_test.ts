/**
 * The server's stages apart from forwarding: admission verdicts, the sweeper's
 * interval, and starting with a signal that is already aborted.
 */
import assert from "node:assert/strict";
import { admissionVerdict, ClientCounts } from "../lib/admission.ts";
import { sweepInterval } from "../lib/sweeper.ts";
import { silentLogger, startProxy } from "../mod.ts";

Deno.test("admissionVerdict: the total limit first, then the per-address one", () => {
  const limits = { maxConnections: 10, maxConnectionsPerClient: 3 };
  assert.equal(admissionVerdict(0, 0, limits), "admit");
  assert.equal(admissionVerdict(9, 2, limits), "admit");
  assert.equal(admissionVerdict(10, 0, limits), "max-connections");
  assert.equal(admissionVerdict(5, 3, limits), "max-connections-per-client");
  assert.equal(admissionVerdict(10, 3, limits), "max-connections");
});

Deno.test("ClientCounts counts per address and forgets addresses at zero", () => {
  const c = new ClientCounts();
  c.add("a");
  c.add("a");
  c.add("b");
  assert.equal(c.get("a"), 2);
  c.remove("a");
  c.remove("a");
  assert.equal(c.get("a"), 0);
  assert.equal(c.get("b"), 1);
});

Deno.test("sweepInterval: a quarter of the shortest timeout, between 25 ms and 1 s; hooks count when limited", () => {
  const base = { bodyTimeoutMs: 120_000, headerTimeoutMs: 30_000, idleTimeoutMs: 60_000, responseTimeoutMs: 60_000 };
  assert.equal(sweepInterval({ ...base, hookTimeoutMs: 0 }), 1000);
  assert.equal(sweepInterval({ ...base, hookTimeoutMs: 400 }), 100);
  assert.equal(sweepInterval({ ...base, headerTimeoutMs: 20, hookTimeoutMs: 0 }), 25);
});

Deno.test("a signal that is already aborted when startProxy is called stops the proxy at once", async () => {
  const abort = new AbortController();
  abort.abort();
  const proxy = startProxy({ hostname: "127.0.0.1", port: 0, logger: silentLogger, signal: abort.signal });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stopped = await Promise.race([
    proxy.finished.then(() => true),
    new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), 2000)),
  ]);
  clearTimeout(timer);
  if (!stopped) await proxy.shutdown(0);
  assert.ok(stopped, "the proxy kept running");
  await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: proxy.addr.port }), Deno.errors.ConnectionRefused);
});
