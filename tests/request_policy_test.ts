/**
 * Unit tests of the built-in request policy verdicts (lib/request_policy.ts)
 * and the framing choice for bodies the proxy produces (lib/answer.ts).
 */
import assert from "node:assert/strict";
import { ForbiddenError, LoopDetectedError, ParseError } from "../lib/errors.ts";
import type { Field } from "../lib/fields.ts";
import type { RequestHead } from "../lib/head.ts";
import { HookError } from "../lib/hooks.ts";
import {
  checkConnectPort,
  checkHostFields,
  checkLoop,
  connectTarget,
  finishHookFields,
  forwardFields,
  isPersistent,
  isValidDestination,
  maxForwardsAnswer,
  maxForwardsOf,
  targetVerdict,
} from "../lib/request_policy.ts";
import { ownFraming } from "../lib/answer.ts";

const head = (method: string, target: string, fields: Field[] = [], minor = 1): RequestHead => ({
  method,
  target,
  minor,
  fields,
});

Deno.test("checkHostFields (RFC 9112 §3.2)", () => {
  checkHostFields([["Host", "a"]], 1);
  checkHostFields([], 0);
  assert.throws(() => checkHostFields([], 1), (e: unknown) => e instanceof ParseError && e.code === "missing-host");
  assert.throws(
    () => checkHostFields([["Host", "a"], ["host", "b"]], 1),
    (e: unknown) => e instanceof ParseError && e.code === "multiple-host",
  );
  assert.throws(
    () => checkHostFields([["Host", "a b"]], 1),
    (e: unknown) => e instanceof ParseError && e.code === "invalid-host",
  );
});

Deno.test("isPersistent (RFC 9112 §9.3)", () => {
  assert.equal(isPersistent(1, new Set(), false), true);
  assert.equal(isPersistent(1, new Set(["close"]), false), false);
  assert.equal(isPersistent(0, new Set(["keep-alive"]), false), false);
  assert.equal(isPersistent(1, new Set(), true), false);
});

Deno.test("targetVerdict: asterisk, origin-form, absolute-form", () => {
  assert.equal(targetVerdict(head("OPTIONS", "*")), null);
  assert.throws(() => targetVerdict(head("GET", "*")), ParseError);
  assert.throws(
    () => targetVerdict(head("GET", "/x")),
    (e: unknown) => e instanceof ParseError && e.code === "origin-form-to-proxy",
  );
  assert.deepEqual(targetVerdict(head("GET", "http://a.test:81/p?q")), {
    hostname: "a.test",
    port: 81,
    authority: "a.test:81",
    path: "/p?q",
  });
});

Deno.test("checkLoop (RFC 9110 §7.6.3)", () => {
  checkLoop([["Via", "1.1 other"]], "waypost");
  assert.throws(() => checkLoop([["Via", "1.0 a, 1.1 WayPost (x)"]], "waypost"), LoopDetectedError);
});

Deno.test("Max-Forwards (RFC 9110 §7.6.2)", () => {
  assert.equal(maxForwardsOf(head("GET", "http://a/", [["Max-Forwards", "0"]])), -1);
  assert.equal(maxForwardsOf(head("TRACE", "http://a/", [["Max-Forwards", "3"]])), 3);
  assert.equal(maxForwardsAnswer(head("TRACE", "http://a/"), 3), null);
  const options = maxForwardsAnswer(head("OPTIONS", "http://a/"), 0)!;
  assert.deepEqual(options.fields, [["Allow", "GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH"]]);
  const trace = maxForwardsAnswer(head("TRACE", "http://a/", [["Cookie", "s"], ["X-A", "1"]]), 0)!;
  assert.equal(trace.body.kind, "bytes");
  const echo = new TextDecoder().decode((trace.body as { data: Uint8Array }).data);
  assert.equal(echo, "TRACE http://a/ HTTP/1.1\r\nX-A: 1\r\n\r\n");
});

Deno.test("CONNECT target and port policy (RFC 9110 §9.3.6)", () => {
  assert.deepEqual(connectTarget("Example.test:443"), { hostname: "example.test", port: 443 });
  assert.deepEqual(connectTarget("[::1]:8443"), { hostname: "::1", port: 8443 });
  for (const bad of ["a.test", "a.test:", "/a:1", "u@a:1", "*", "[::1]"]) {
    assert.throws(() => connectTarget(bad), ParseError, bad);
  }
  checkConnectPort([443], 443);
  checkConnectPort("*", 22);
  assert.throws(
    () => checkConnectPort([443], 22),
    (e: unknown) => e instanceof ForbiddenError && e.code === "connect-port-denied",
  );
});

Deno.test("forwardFields: Host from the target, hop-by-hop out, Max-Forwards decremented, Via last", () => {
  const h = head("OPTIONS", "http://a/", [
    ["Host", "wrong"],
    ["Connection", "x-hop"],
    ["X-Hop", "1"],
    ["Max-Forwards", "5"],
    ["Accept", "*/*"],
  ]);
  const out = forwardFields(h, new Set(["x-hop"]), "a", 5, undefined, ["Via", "1.1 waypost"]);
  assert.deepEqual(out, [["Host", "a"], ["Max-Forwards", "4"], ["Accept", "*/*"], ["Via", "1.1 waypost"]]);
});

Deno.test("finishHookFields: invalid entries fail the hook; managed fields removed", () => {
  assert.deepEqual(
    finishHookFields([["A", "1"], ["Transfer-Encoding", "chunked"], ["Connection", "b"], ["B", "2"]], "onRequest"),
    [["A", "1"]],
  );
  assert.throws(
    () => finishHookFields([["A", "1\r\n"]], "onResponse"),
    (e: unknown) => e instanceof HookError && e.code === "hook-on-response-invalid",
  );
});

Deno.test("isValidDestination", () => {
  assert.ok(isValidDestination({ hostname: "a.test", port: 1 }));
  for (
    const d of [
      { hostname: "", port: 1 },
      { hostname: "a", port: 0 },
      { hostname: "a", port: 65536 },
      {
        hostname: "a b",
        port: 80,
      },
      { hostname: "a", port: 1.5 },
      { hostname: 5, port: 80 },
    ]
  ) {
    assert.ok(!isValidDestination(d), JSON.stringify(d));
  }
});

Deno.test("ownFraming: a known length, chunked for HTTP/1.1, close-delimited for HTTP/1.0; none for HEAD/204/304", () => {
  assert.deepEqual(ownFraming(5, 200, "GET", 1), { kind: "length", length: 5, send: true });
  assert.deepEqual(ownFraming(-1, 200, "GET", 1), { kind: "chunked" });
  assert.deepEqual(ownFraming(-1, 200, "GET", 0), { kind: "close" });
  assert.deepEqual(ownFraming(5, 200, "HEAD", 1), { kind: "length", length: 5, send: false });
  assert.deepEqual(ownFraming(-1, 200, "HEAD", 1), { kind: "none" });
  assert.deepEqual(ownFraming(5, 204, "GET", 1), { kind: "none" });
  assert.deepEqual(ownFraming(5, 304, "GET", 1), { kind: "none" });
});
