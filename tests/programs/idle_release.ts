/**
 * Run by tests/idle_release_test.ts in its own process: grows the heap with
 * objects that live long enough to reach the old generation, drops them, and
 * waits 5 s without traffic. With `release`, a proxy runs meanwhile (its
 * sweeper asks for the memory back once idle); with `off`, the same proxy runs
 * with `memoryRelease: false`.
 * Prints `{ "before": bytes, "after": bytes, "releases": n }` (V8's committed heap).
 *
 *   deno run --allow-net --v8-flags=--max-semi-space-size=2 tests/programs/idle_release.ts release|off
 */
import { silentLogger, startProxy } from "../../mod.ts";
import { idleRelease } from "../../lib/idle_release.ts";

const mode = Deno.args[0];
const proxy = await startProxy({
  hostname: "127.0.0.1",
  port: 0,
  logger: silentLogger,
  headerTimeoutMs: 400,
  memoryRelease: mode === "release",
});

// A burst: objects that survive several young-generation collections (promoted), then garbage.
let kept: unknown[] = [];
for (let i = 0; i < 300_000; i++) kept.push({ n: i, pair: [i, i + 1] });
for (let j = 0; j < 40; j++) new Array(50_000).fill(j); // young garbage: scavenges while `kept` lives
kept = [];
const before = Deno.memoryUsage().heapTotal;
await new Promise((resolve) => setTimeout(resolve, 5000));
const after = Deno.memoryUsage().heapTotal;
console.log(JSON.stringify({ before, after, releases: idleRelease().releases }));
await proxy.shutdown(0);
