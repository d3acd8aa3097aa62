/**
 * Quick fuzz runs for CI: seeded inputs through the pure wire modules, and
 * fuzzed connections to an in-process proxy. The long run is `deno task fuzz`
 * (bench/fuzz.ts).
 */
import assert from "node:assert/strict";
import {
  formatFailure,
  fromHex,
  fuzzCase,
  fuzzProxy,
  generateInput,
  KNOWN_SPLIT_ISSUES,
  runFuzz,
  seedCorpus,
  targetsOnlyOrigin,
  toHex,
} from "./fuzz_lib.ts";
import { type HeadKind, type HeadLimits, HeadParser } from "../lib/head.ts";
import { bytes, mulberry32, runSplits, text } from "./wire_util.ts";

/** Inputs per seed in CI (the long run uses 1,000,000). */
const INPUTS_PER_SEED = 10_000;
const SEEDS = [1, 0xc0ffee];
/** Fuzzed connections in CI; the task overrides it (bench/fuzz.ts uses 10,000). */
const SOCKET_CONNECTIONS = 1_000;

Deno.test("fuzz: generator is deterministic and mixes valid and invalid inputs", () => {
  const a = mulberry32(7);
  const b = mulberry32(7);
  const c = mulberry32(8);
  let same = 0;
  for (let i = 0; i < 200; i++) {
    const x = toHex(generateInput(a));
    assert.equal(x, toHex(generateInput(b)), `input ${i} differs for the same seed`);
    if (x === toHex(generateInput(c))) same++;
  }
  assert.ok(same < 20, `seeds 7 and 8 gave ${same} equal inputs of 200`);
  assert.deepEqual(fromHex(toHex(bytes("\x00\r\n\xff"))), bytes("\x00\r\n\xff"));
  // Every seed is a complete message for some parser, so mutations start from valid input.
  for (const seed of seedCorpus("example.com")) {
    const report = fuzzCase(seed, 1);
    assert.ok(report.accepted, `seed not accepted: ${JSON.stringify(text(seed))}`);
  }
});

Deno.test("fuzz: a case reports each stage as complete, incomplete or Class:code", () => {
  // A valid request is accepted by the request parser, its framing and its target.
  const report = fuzzCase(bytes("GET http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"), 3);
  assert.equal(report.stages.request, "complete");
  assert.equal(report.stages["request-framing"], "complete");
  assert.equal(report.stages["request-target"], "complete");
  assert.equal(report.stages.response, "ParseError:invalid-status-line");
  // Rejections are keyed by class and code.
  const bad = fuzzCase(bytes("GET / HTTP/1.1\nHost: a\r\n\r\n"), 3);
  assert.equal(bad.stages.request, "ParseError:bare-lf");
  assert.ok(!bad.accepted);
});

Deno.test("fuzz: socket targets are screened to the loopback origin", () => {
  assert.ok(targetsOnlyOrigin(bytes("GET http://127.0.0.1:8080/ HTTP/1.1\r\n\r\n"), 8080));
  assert.ok(!targetsOnlyOrigin(bytes("GET http://127.0.0.1:8081/ HTTP/1.1\r\n\r\n"), 8080));
  assert.ok(!targetsOnlyOrigin(bytes("GET HTTP://Example.COM:8080/ HTTP/1.1\r\n\r\n"), 8080));
  assert.ok(!targetsOnlyOrigin(bytes("x\r\nCONNECT example.com:8080 HTTP/1.1\r\n\r\n"), 8080));
  assert.ok(targetsOnlyOrigin(bytes("CONNECT 127.0.0.1:8080 HTTP/1.1\r\n\r\n"), 8080));
  // Refused by the target parser: the proxy connects nowhere.
  assert.ok(targetsOnlyOrigin(bytes("GET http://u@evil.example/ HTTP/1.1\r\n\r\n"), 8080));
});

Deno.test("fuzz: wire modules", async (t) => {
  for (const seed of SEEDS) {
    await t.step(`seed=${seed}, ${INPUTS_PER_SEED} inputs`, () => {
      const stats = runFuzz(INPUTS_PER_SEED, seed);
      assert.equal(stats.failureCount, 0, `\n${stats.failures.map(formatFailure).join("\n\n")}`);
      assert.equal(stats.inputs, INPUTS_PER_SEED);
      // Not vacuous: many inputs get through, many are refused, for many reasons.
      assert.ok(stats.accepted > INPUTS_PER_SEED / 10, `only ${stats.accepted} accepted`);
      assert.ok(stats.rejectedInputs > INPUTS_PER_SEED / 10, `only ${stats.rejectedInputs} rejected`);
      assert.ok(Object.keys(stats.rejected).length >= 25, `only codes ${Object.keys(stats.rejected).join(", ")}`);
      for (const stage of ["request", "response", "trailer", "chunked", "request-framing", "response-framing"]) {
        assert.ok((stats.stages[stage]?.complete ?? 0) > 0, `stage ${stage} never completed`);
      }
    });
  }
});

Deno.test("fuzz: sockets to an in-process proxy", async () => {
  const report = await fuzzProxy(SOCKET_CONNECTIONS, { seed: 1, concurrency: 50 });
  const failures = report.failures.map((f) => `#${f.index} ${f.what}\n  input hex: ${f.inputHex}`);
  assert.deepEqual(failures, []);
  assert.deepEqual(report.errorLogs, []);
  assert.equal(report.stats.connections, SOCKET_CONNECTIONS);
  assert.equal(report.afterStatus, 200);
  assert.equal(report.afterBody, "target=/after-fuzz");
  assert.equal(report.connectionsLeft, 0, `${report.connectionsLeft} client connections still open`);
  // The fuzz reached both the proxy's own answers and the origin.
  assert.ok((report.stats.statuses["400"] ?? 0) > 0, JSON.stringify(report.stats.statuses));
  assert.ok((report.stats.statuses["200"] ?? 0) > 0, JSON.stringify(report.stats.statuses));
});

/** Feeds a head; the outcome is `complete` or the error's class and code. */
function headOutcome(kind: HeadKind, limits?: HeadLimits) {
  return (pieces: Iterable<Uint8Array>): string => {
    const parser = new HeadParser(kind, limits);
    for (const piece of pieces) {
      parser.push(piece);
      if (parser.complete) return "complete";
    }
    return "incomplete";
  };
}

/** Every way of cutting `wire` must give the outcome of feeding it whole. */
function assertSplitIndependent(kind: HeadKind, wire: string, limits?: HeadLimits): void {
  const runs = runSplits(bytes(wire), headOutcome(kind, limits));
  const show = (r: (typeof runs)[number]) => {
    if (r.outcome.ok) return r.outcome.value;
    const e = r.outcome.error as { name: string; code: string };
    return `${e.name}:${e.code}`;
  };
  const whole = show(runs[0]);
  const differing = runs.filter((r) => show(r) !== whole).map((r) => `${r.split} -> ${show(r)}`);
  assert.deepEqual(differing, [], `whole -> ${whole}`);
}

// Found by this fuzzer: the error for an over-long start line depended on how the bytes were split
// (a partial line was checked against the start-line limit first, a complete one against the head
// limit and for CRLF first). c4d55ab fixed the cases below; they stay as regression tests.
Deno.test("fuzz finding (fixed): start-line limit error does not depend on split points", async (t) => {
  await t.step("status line over both limits: was head-too-large whole, status-line-too-long in pieces", () => {
    const limits = { maxRequestLineBytes: 16, maxHeadBytes: 32, maxFields: 100 };
    assertSplitIndependent("response", `HTTP/1.1 200 ${"a".repeat(40)}\r\n\r\n`, limits);
  });
  await t.step("default limits: 8 KiB+ request line with a bare LF: was 400 bare-lf whole, 414 in pieces", () => {
    assertSplitIndependent("request", `GET /${"a".repeat(8200)} HTTP/1.1\n\r\n`);
  });
});

// Still open (KNOWN_SPLIT_ISSUES "response-start-line-limit-order"); fails until lib/head.ts is fixed.
// With maxHeadBytes <= maxRequestLineBytes, a complete status line over both limits is reported as
// status-line-too-long, but fed in pieces the partial line crosses the head limit first: head-too-large.
Deno.test("fuzz finding: status line over both limits, head limit the smaller, split-independent", () => {
  assert.deepEqual(KNOWN_SPLIT_ISSUES, ["response-start-line-limit-order"]);
  const limits = { maxRequestLineBytes: 32, maxHeadBytes: 13, maxFields: 100 };
  assertSplitIndependent("response", `HTTP/1.1 200 ${"a".repeat(40)}\r\n\r\n`, limits);
});
