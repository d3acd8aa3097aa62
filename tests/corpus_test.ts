/**
 * Replays the public parser corpus (vectors from llhttp, http-parser and
 * picohttpparser; see tests/corpus/README.md) through a running proxy with the
 * corpus's own Python checker. Every vector must pass: 0 failed.
 */
import assert from "node:assert/strict";
import { silentLogger, startProxy } from "../mod.ts";

Deno.test("parser corpus replayed through the proxy: 0 failed", async () => {
  const proxy = startProxy({ port: 0, logger: silentLogger });
  try {
    const script = new URL("./corpus/corpuscheck.py", import.meta.url).pathname;
    const out = await new Deno.Command("python3", {
      args: [script, "--proxy", `127.0.0.1:${proxy.addr.port}`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    const failures = text.split("\n").filter((line) => line.startsWith("FAIL"));
    const summary = text.trim().split("\n").at(-1) ?? "";
    assert.match(summary, /^\d+ passed, 0 failed, \d+ skipped$/, `${failures.join("\n")}\n${summary}`);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  } finally {
    await proxy.shutdown(1000);
  }
});
