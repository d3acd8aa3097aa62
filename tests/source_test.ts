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
