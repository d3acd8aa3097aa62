/**
 * The long fuzz run: seeded inputs through the pure wire modules (progress
 * and heap every 100k inputs, so flat memory is visible), then fuzzed
 * connections to an in-process proxy, then a normal request through it.
 * Exits 1 on any failure; split-dependent outcomes already reported
 * (KNOWN_SPLIT_ISSUES, each with a failing test) only fail with --strict.
 *
 *   deno run -A bench/fuzz.ts [--count 1000000] [--seed 1] [--sockets 10000] [--concurrency 50] [--strict]
 */
import { parseArgs } from "node:util";
import { formatFailure, fuzzProxy, type FuzzStats, runFuzz } from "../tests/fuzz_lib.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    count: { type: "string", default: "1000000" },
    seed: { type: "string", default: "1" },
    sockets: { type: "string", default: "10000" },
    concurrency: { type: "string", default: "50" },
    strict: { type: "boolean", default: false },
  },
});
const COUNT = Number(values.count);
const SEED = Number(values.seed);
const SOCKETS = Number(values.sockets);
const CONCURRENCY = Number(values.concurrency);
for (
  const [name, n] of [["count", COUNT], ["seed", SEED], ["sockets", SOCKETS], ["concurrency", CONCURRENCY]] as const
) {
  if (!Number.isInteger(n) || n < 0) {
    console.error(`--${name} must be a non-negative integer`);
    Deno.exit(2);
  }
}

const MIB = 1024 * 1024;
const mib = (n: number) => (n / MIB).toFixed(1);
const started = performance.now();

function progress(s: FuzzStats): void {
  const mem = Deno.memoryUsage();
  const known = Object.values(s.known).reduce((n, k) => n + k.count, 0);
  console.log(
    `${String(s.inputs).padStart(8)} inputs  ${(s.ms / 1000).toFixed(1).padStart(6)} s  ` +
      `${Math.round(s.inputs / (s.ms / 1000))}/s  accepted ${s.accepted}  rejected ${s.rejectedInputs}  ` +
      `failures ${s.failureCount}  known ${known}  heap ${mib(mem.heapUsed)} MiB  rss ${mib(mem.rss)} MiB`,
  );
}

console.log(`wire fuzz: ${COUNT} inputs, seed ${SEED}`);
const wire = runFuzz(COUNT, SEED, { onProgress: progress, progressEvery: 100_000 });
if (wire.inputs % 100_000 !== 0) progress(wire);
console.log("rejections by class:code (all stages):");
for (const [key, n] of Object.entries(wire.rejected).sort((a, b) => b[1] - a[1])) {
  console.log(`  ${String(n).padStart(9)}  ${key}`);
}
console.log(`slowest input: ${wire.slowest.ms.toFixed(1)} ms (#${wire.slowest.index}, ${wire.slowest.length} bytes)`);
for (const f of wire.failures) console.log(`\nFAILURE ${formatFailure(f)}`);
if (wire.failureCount > wire.failures.length) {
  console.log(`... and ${wire.failureCount - wire.failures.length} more failures`);
}
const knownCount = Object.values(wire.known).reduce((n, k) => n + k.count, 0);
for (const [issue, k] of Object.entries(wire.known)) {
  console.log(
    `\nKNOWN ${issue}: ${k.count} inputs (reported; failing test in tests/fuzz_test.ts); first: case seed ${k.caseSeed}, ` +
      `${k.exampleHex.length / 2} bytes: ${k.exampleHex.slice(0, 200)}${k.exampleHex.length > 200 ? "..." : ""}`,
  );
}

let socketFailures = 0;
let sockets = "skipped";
if (SOCKETS > 0) {
  console.log(`\nsocket fuzz: ${SOCKETS} connections, ${CONCURRENCY} at once`);
  try {
    const report = await fuzzProxy(SOCKETS, { seed: SEED, concurrency: CONCURRENCY });
    const s = report.stats;
    console.log(`  ${s.connections} connections in ${(s.ms / 1000).toFixed(1)} s, ${mib(s.bytes)} MiB written`);
    console.log(`  modes ${JSON.stringify(s.modes)}`);
    console.log(`  first status ${JSON.stringify(s.statuses)}  writes cut short ${s.writesCut}  stalls ${s.stalls}`);
    console.log(`  normal GET after: ${report.afterStatus} ${JSON.stringify(report.afterBody)}`);
    console.log(`  client connections left: ${report.connectionsLeft} (after ${report.drainMs.toFixed(0)} ms)`);
    for (const f of report.failures.slice(0, 20)) {
      console.log(`FAILURE socket #${f.index}: ${f.what}\n  input hex: ${f.inputHex}`);
    }
    for (const line of report.errorLogs) console.log(`FAILURE proxy logged an error: ${line}`);
    const ok = report.afterStatus === 200 && report.afterBody === "target=/after-fuzz" && report.connectionsLeft === 0;
    if (!ok) console.log("FAILURE the proxy did not recover: see the normal GET and connections left above");
    socketFailures = report.failures.length + report.errorLogs.length + (ok ? 0 : 1);
    sockets = `${s.connections} connections, ${socketFailures} failures, ${(s.ms / 1000).toFixed(1)} s`;
  } catch (error) {
    // The proxy could not be shut down (a stuck session): a failure, reported with the summary.
    console.log(`FAILURE ${error instanceof Error ? error.message : String(error)}`);
    socketFailures = 1;
    sockets = "aborted";
  }
}

const failed = wire.failureCount > 0 || socketFailures > 0 || (values.strict && knownCount > 0);
console.log(
  `\nSUMMARY ${failed ? "FAIL" : "PASS"}: wire ${wire.inputs} inputs (${mib(wire.bytes)} MiB), ` +
    `${wire.accepted} accepted, ${wire.rejectedInputs} rejected, ${wire.failureCount} failures, ${knownCount} known, ` +
    `${(wire.ms / 1000).toFixed(1)} s; sockets ${sockets}; total ${
      ((performance.now() - started) / 1000).toFixed(1)
    } s`,
);
Deno.exit(failed ? 1 : 0);
