/**
 * Unit tests of what hooks see of a message (lib/message_view.ts,
 * lib/hook_messages.ts): the live Headers view over a field list, field
 * validation, bodies read, replaced and transformed, and reply normalisation.
 */
import assert from "node:assert/strict";
import type { Field } from "../lib/fields.ts";
import { FieldsHeaders, findInvalidField, MessageBody } from "../lib/message_view.ts";
import { HookRequest, normalizeReply } from "../lib/hook_messages.ts";
import { BodyTooLargeError } from "../lib/hooks.ts";
import { type BodyReader, EMPTY_BODY } from "../lib/reader.ts";

/** A body reader over fixed pieces. */
function pieces(...parts: string[]): BodyReader & { reads: number } {
  const enc = new TextEncoder();
  let i = 0;
  return {
    reads: 0,
    get done() {
      return i >= parts.length;
    },
    trailers: [],
    next() {
      this.reads++;
      return Promise.resolve(i < parts.length ? enc.encode(parts[i++]) : null);
    },
  };
}

const tooLarge = (cap: number) => new BodyTooLargeError(`over ${cap}`, 502);

Deno.test("FieldsHeaders edits the field list in place", async (t) => {
  await t.step("get combines, has, case-insensitive", () => {
    const fields: Field[] = [["Accept", "a"], ["X-Y", "1"], ["accept", "b"]];
    const h = new FieldsHeaders(fields);
    assert.equal(h.get("ACCEPT"), "a, b");
    assert.equal(h.get("missing"), null);
    assert.ok(h.has("x-y"));
  });
  await t.step("set keeps the first field's place and case, removes the rest", () => {
    const fields: Field[] = [["Accept", "a"], ["X-Y", "1"], ["accept", "b"]];
    new FieldsHeaders(fields).set("accept", " c ");
    assert.deepEqual(fields, [["Accept", "c"], ["X-Y", "1"]]);
  });
  await t.step("set of a new name and append add at the end with the given case", () => {
    const fields: Field[] = [["A", "1"]];
    const h = new FieldsHeaders(fields);
    h.set("X-New", "v");
    h.append("A", "2");
    assert.deepEqual(fields, [["A", "1"], ["X-New", "v"], ["A", "2"]]);
  });
  await t.step("delete removes every field of that name", () => {
    const fields: Field[] = [["A", "1"], ["b", "2"], ["a", "3"]];
    new FieldsHeaders(fields).delete("a");
    assert.deepEqual(fields, [["b", "2"]]);
  });
  await t.step("iteration follows web Headers (sorted, combined, set-cookie one by one)", () => {
    const h = new FieldsHeaders([["B", "1"], ["Set-Cookie", "x=1"], ["a", "2"], ["b", "3"], ["set-cookie", "y=2"]]);
    assert.deepEqual([...h], [["a", "2"], ["b", "1, 3"], ["set-cookie", "x=1"], ["set-cookie", "y=2"]]);
    assert.deepEqual(h.getSetCookie(), ["x=1", "y=2"]);
    assert.deepEqual([...h.keys()], ["a", "b", "set-cookie", "set-cookie"]);
  });
  await t.step("invalid names and values are a TypeError; nothing is added", () => {
    const fields: Field[] = [];
    const h = new FieldsHeaders(fields);
    for (const [n, v] of [["X", "a\r\nB: c"], ["X", "a\nb"], ["X", "a\0b"], ["X Y", "1"], ["", "1"], ["X", "\u0100"]]) {
      assert.throws(() => h.set(n, v), TypeError);
      assert.throws(() => h.append(n, v), TypeError);
    }
    assert.deepEqual(fields, []);
  });
  await t.step("editing a managed field marks the list for the full check", () => {
    const h = new FieldsHeaders([]);
    h.set("X-Plain", "1");
    assert.equal(h.managedEdited, false);
    h.set("Transfer-Encoding", "chunked");
    assert.equal(h.managedEdited, true);
  });
});

Deno.test("findInvalidField finds the first entry that cannot be a field line", () => {
  assert.equal(findInvalidField([["A", "1"], ["B", "obs-text \xe9"]]), -1);
  assert.equal(findInvalidField([["A", "1"], ["B", "x\ry"]]), 1);
  assert.equal(findInvalidField([["A:", "1"]]), 0);
  assert.equal(findInvalidField([["A"] as unknown as Field]), 0);
  assert.equal(findInvalidField([["A", 1] as unknown as Field]), 0);
});

Deno.test("MessageBody: untouched, read, replaced, transformed", async (t) => {
  await t.step("untouched: wire, nothing read", () => {
    const wire = pieces("ab");
    const body = new MessageBody(wire, { tooLarge });
    assert.equal(body.modified, false);
    assert.equal(wire.reads, 0);
  });
  await t.step("text() reads it all and keeps it for sending", async () => {
    const body = new MessageBody(pieces("hé".normalize(), "llo"), { tooLarge });
    assert.equal(await body.text(), "héllo");
    assert.equal(body.source.kind, "bytes");
    assert.equal(await body.text(), "héllo", "read twice");
    assert.equal(body.orphan, null);
  });
  await t.step("a cap: BodyTooLargeError", async () => {
    const body = new MessageBody(pieces("12345", "67890"), { tooLarge });
    await assert.rejects(body.bytes(8), BodyTooLargeError);
  });
  await t.step("setBody before reading leaves the original as an orphan to drain", () => {
    const wire = pieces("original");
    const body = new MessageBody(wire, { tooLarge });
    body.setBody("new");
    assert.equal(body.orphan, wire);
    assert.equal(body.source.kind, "bytes");
  });
  await t.step("pipeThrough streams the wire through the transform", async () => {
    const body = new MessageBody(pieces("ab", "cd"), { tooLarge });
    body.pipeThrough(
      new TransformStream({ transform: (c, ctl) => ctl.enqueue(c.map((b: number) => b - 32)) }),
    );
    assert.equal(await body.text(), "ABCD");
  });
  await t.step("no body allowed: setBody and pipeThrough throw; an empty body is fine", () => {
    const body = new MessageBody(EMPTY_BODY, { tooLarge, noBody: () => "no body here" });
    assert.throws(() => body.setBody("x"), TypeError);
    assert.throws(() => body.pipeThrough(new TransformStream()), TypeError);
    body.setBody(null);
  });
  await t.step("sealed: body methods throw", async () => {
    const body = new MessageBody(pieces("x"), { tooLarge });
    body.seal("sent already");
    await assert.rejects(body.text(), TypeError);
    assert.throws(() => body.setBody("y"), TypeError);
  });
});

Deno.test("HookRequest: the body reader is made only when a hook uses the body; url edits change the path", () => {
  let made = 0;
  const req = new HookRequest(
    "GET",
    "http://example.test:8080/a/b?c=1",
    { hostname: "example.test", port: 8080, authority: "example.test:8080", path: "/a/b?c=1" },
    [["Host", "example.test:8080"]],
    () => (made++, EMPTY_BODY),
  );
  assert.equal(req.bodyModified, false);
  assert.equal(made, 0);
  assert.equal(req.fieldsNeedCheck, false);
  req.headers.set("X-A", "1");
  assert.equal(req.fieldsNeedCheck, false, "a plain header edit is checked when made");
  assert.equal(req.path, "/a/b?c=1");
  assert.equal(req.url.port, "8080");
  assert.equal(req.path, "/a/b?c=1", "reading url changes nothing");
  req.url.pathname = "/z";
  assert.equal(req.path, "/z?c=1");
  void req.fields;
  assert.equal(req.fieldsNeedCheck, true);
  req.setBody("x");
  assert.equal(made, 1);
});

Deno.test("normalizeReply: status, reason, fields and body checked; framing fields removed", async (t) => {
  await t.step("plain object, names keep their case", () => {
    const a = normalizeReply({
      status: 403,
      headers: [["X-Why", "policy"], ["Content-Length", "99"], ["Connection", "close"]],
      body: "no",
    })!;
    assert.equal(a.status, 403);
    assert.equal(a.reason, "Forbidden");
    assert.deepEqual(a.fields, [["X-Why", "policy"]]);
    assert.equal(a.body.kind, "bytes");
  });
  await t.step("Proxy-Authenticate stays in the proxy's own answer", () => {
    const a = normalizeReply({ status: 407, headers: { "Proxy-Authenticate": "Basic" } })!;
    assert.deepEqual(a.fields, [["Proxy-Authenticate", "Basic"]]);
  });
  await t.step("a web Response with a stream body", () => {
    const a = normalizeReply(new Response("x", { status: 201, statusText: "Made" }))!;
    assert.equal(a.status, 201);
    assert.equal(a.reason, "Made");
    assert.equal(a.body.kind, "stream");
  });
  for (
    const [name, reply] of [
      ["a 1xx status", { status: 100 }],
      ["status 600", { status: 600 }],
      ["a fractional status", { status: 200.5 }],
      ["a reason with CR LF", { status: 200, reason: "OK\r\nX: y" }],
      ["a header value with LF", { status: 200, headers: { "X-A": "a\nb" } }],
      ["a bad header name", { status: 200, headers: { "X A": "1" } }],
      ["a body of the wrong type", { status: 200, body: 5 }],
    ] as const
  ) {
    await t.step(`invalid: ${name}`, () => {
      assert.equal(normalizeReply(reply as never), null);
    });
  }
});
