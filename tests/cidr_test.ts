/** IP addresses and CIDR ranges: strict parsing, IPv4-mapped forms, matching. */
import assert from "node:assert/strict";
import { inCidr, LOOPBACK, matchCidr, parseCidr, parseIp, parseIPv4, parseIPv6 } from "../lib/cidr.ts";

const hex = (b: Uint8Array | null) => b === null ? null : [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

Deno.test("IPv4 text: dotted quads only, no leading zeros, parts 0-255", () => {
  assert.deepEqual([...parseIPv4("10.0.255.1")!], [10, 0, 255, 1]);
  for (const bad of ["010.0.0.1", "256.0.0.1", "1.2.3", "1.2.3.4.5", "1.2.3.", "a.b.c.d", "1.2.3.-1", " 1.2.3.4", ""]) {
    assert.equal(parseIPv4(bad), null, bad);
  }
});

Deno.test("IPv6 text: compressed forms, a trailing dotted quad, nothing else", () => {
  assert.equal(hex(parseIPv6("::1")), "00000000000000000000000000000001");
  assert.equal(hex(parseIPv6("2001:db8::")), "20010db8000000000000000000000000");
  assert.equal(hex(parseIPv6("::ffff:1.2.3.4")), "00000000000000000000ffff01020304");
  assert.equal(hex(parseIPv6("1:2:3:4:5:6:7:8")), "00010002000300040005000600070008");
  for (
    const bad of ["1::2::3", ":::", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "12345::", "1.2.3.4::", "fe80::1%eth0", "g::"]
  ) {
    assert.equal(parseIPv6(bad), null, bad);
  }
});

Deno.test("IPv4-mapped and IPv4-compatible IPv6 addresses are their IPv4 address; :: and ::1 stay IPv6", () => {
  assert.deepEqual([...parseIp("::ffff:127.0.0.1")!], [127, 0, 0, 1]);
  assert.deepEqual([...parseIp("::ffff:7f00:1")!], [127, 0, 0, 1]);
  assert.deepEqual([...parseIp("::10.1.2.3")!], [10, 1, 2, 3]);
  assert.equal(parseIp("::1")!.length, 16);
  assert.equal(parseIp("::")!.length, 16);
  assert.deepEqual([...parseIp("[::ffff:10.0.0.1]")!], [10, 0, 0, 1]);
  assert.equal(parseIp("example.test"), null);
});

Deno.test("CIDR ranges: parse, mask, match; bad prefixes refused", () => {
  const r = parseCidr("10.1.2.3/8");
  assert.deepEqual([...r.bytes], [10, 0, 0, 0]);
  assert.ok(inCidr(parseIp("10.255.0.1")!, r));
  assert.ok(!inCidr(parseIp("11.0.0.1")!, r));
  assert.ok(inCidr(parseIp("::ffff:10.9.9.9")!, r), "an IPv4-mapped address matches the IPv4 range");
  assert.ok(inCidr(parseIp("::ffff:10.9.9.9")!, parseCidr("::ffff:10.0.0.0/104")));
  assert.ok(inCidr(parseIp("2001:db8::5")!, parseCidr("2001:db8::/32")));
  assert.ok(!inCidr(parseIp("2001:db9::5")!, parseCidr("2001:db8::/32")));
  assert.ok(inCidr(parseIp("1.2.3.4")!, parseCidr("0.0.0.0/0")));
  assert.ok(!inCidr(parseIp("1.2.3.4")!, parseCidr("::/0")), "families do not mix");
  assert.ok(inCidr(parseIp("192.168.1.77")!, parseCidr("192.168.1.64/26")));
  assert.ok(!inCidr(parseIp("192.168.1.128")!, parseCidr("192.168.1.64/26")));
  assert.equal(parseCidr("192.0.2.7").prefix, 32);
  for (const bad of ["10.0.0.0/33", "10.0.0.0/", "10.0.0.0/08", "::/129", "10.0.0/8", "host/8", "10.0.0.0/-1"]) {
    assert.throws(() => parseCidr(bad), TypeError, bad);
  }
  assert.equal(matchCidr(LOOPBACK, "127.0.0.1")?.text, "127.0.0.0/8");
  assert.equal(matchCidr(LOOPBACK, "::1")?.text, "::1/128");
  assert.equal(matchCidr(LOOPBACK, "::ffff:127.0.0.2")?.text, "127.0.0.0/8");
  assert.equal(matchCidr(LOOPBACK, "10.0.0.1"), null);
});
