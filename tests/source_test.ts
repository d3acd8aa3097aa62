import assert from "node:assert/strict";

// V8 keeps every loaded module's source in the heap for as long as the process runs (Deno's
// emitted JavaScript with its inline source map, which holds the TypeScript again). One character
// beyond U+00FF anywhere in a file makes the whole string two bytes per character: "→" in a comment
// of forward.ts cost 143 KB of heap. Comments use ASCII (or Latin-1: "§", "×") instead.
Deno.test("sources the proxy loads are Latin-1, so V8 stores them one byte per character", async () => {
  const files = ["main.ts", "mod.ts"];
  for await (const entry of Deno.readDir(new URL("../lib/", import.meta.url))) {
    if (entry.isFile && entry.name.endsWith(".ts")) files.push(`lib/${entry.name}`);
  }
  assert.ok(files.length > 40, "lib/ was read");
  for (const file of files) {
    const text = await Deno.readTextFile(new URL(`../${file}`, import.meta.url));
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
      const wide = [...lines[i]].find((c) => c.codePointAt(0)! > 0xff);
      assert.equal(
        wide,
        undefined,
        `${file}:${i + 1} has ${JSON.stringify(wide)} (U+${wide?.codePointAt(0)?.toString(16)})`,
      );
    }
  }
});

Deno.test("the runtime flags are the same in deno.json's tasks, the README's command lines and the benchmarks", async () => {
  const { RUN_FLAGS } = await import("../bench/util.ts");
  const want = RUN_FLAGS.join(" ");
  const tasks = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url))).tasks as Record<
    string,
    string
  >;
  for (const name of ["start", "start:workers", "compile"]) {
    assert.ok(tasks[name].includes(` ${want} `), `deno.json task ${name} has ${want}`);
  }
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const lines = readme.split("\n").filter((l) => l.includes("--v8-flags="));
  assert.ok(lines.length >= 2, "the README shows the command line");
  for (const line of lines) {
    const flags = /--v8-flags=(\S+)/.exec(line)![1];
    assert.equal(`--v8-flags=${flags}`, RUN_FLAGS[1], `README: ${line.slice(0, 80)}...`);
  }
});
