import assert from "node:assert/strict";
import { DEFAULTS, parseDuration, resolveOptions } from "../lib/options.ts";

Deno.test("parseDuration reads ms, s, m, h; a bare number is seconds", async (t) => {
  const rows: Array<{ name: string; wire: string; expect: number }> = [
    { name: "milliseconds", wire: "500ms", expect: 500 },
    { name: "seconds", wire: "10s", expect: 10_000 },
    { name: "minutes", wire: "2m", expect: 120_000 },
    { name: "hours", wire: "1h", expect: 3_600_000 },
    { name: "bare number is seconds", wire: "5", expect: 5_000 },
    { name: "zero", wire: "0", expect: 0 },
    { name: "zero ms", wire: "0ms", expect: 0 },
    { name: "leading zeros", wire: "007s", expect: 7_000 },
    { name: "nine digits", wire: "999999999ms", expect: 999_999_999 },
    { name: "surrounding whitespace ignored", wire: " 3s\t", expect: 3_000 },
    { name: "empty", wire: "", expect: NaN },
    { name: "unit alone", wire: "s", expect: NaN },
    { name: "ten digits", wire: "1234567890", expect: NaN },
    { name: "fraction", wire: "1.5s", expect: NaN },
    { name: "negative", wire: "-1s", expect: NaN },
    { name: "plus sign", wire: "+1s", expect: NaN },
    { name: "exponent", wire: "1e3", expect: NaN },
    { name: "hex", wire: "0x10", expect: NaN },
    { name: "upper-case unit", wire: "10S", expect: NaN },
    { name: "space before the unit", wire: "10 s", expect: NaN },
    { name: "unknown unit", wire: "10d", expect: NaN },
    { name: "two units", wire: "1m30s", expect: NaN },
    { name: "non-ASCII digits", wire: "\u0661s", expect: NaN },
  ];
  for (const row of rows) {
    // deepStrictEqual compares with Object.is, so NaN equals NaN.
    await t.step(row.name, () => assert.deepStrictEqual(parseDuration(row.wire), row.expect));
  }
});

Deno.test("resolveOptions fills in defaults and validates via", async (t) => {
  await t.step("empty options give the defaults", () => {
    const out = resolveOptions();
    for (const [key, value] of Object.entries(DEFAULTS)) {
      // The instance tag is random per start when not given.
      if (key === "instanceId") assert.match(out.instanceId, /^[0-9a-f]{8}$/);
      else assert.deepStrictEqual((out as unknown as Record<string, unknown>)[key], value, key);
    }
  });
  await t.step("given values win, undefined ones do not", () => {
    const out = resolveOptions({ port: 0, hostname: undefined, maxFields: 7 });
    assert.equal(out.port, 0);
    assert.equal(out.hostname, DEFAULTS.hostname);
    assert.equal(out.maxFields, 7);
  });
  await t.step("via must be a token", () => {
    assert.equal(resolveOptions({ via: "proxy-1.example:3128" }).via, "proxy-1.example:3128");
    for (const via of ["", "two words", "a,b", "caf\xe9", "x\r\nInjected: 1"]) {
      assert.throws(() => resolveOptions({ via }), TypeError, JSON.stringify(via));
    }
  });
});
