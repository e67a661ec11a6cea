// What JavaScript values become on the wire (src/encode.ts): the documented
// msgpack form, byte for byte, or a refusal that says what and where.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ExtData, decode, encode as libraryEncode } from "@msgpack/msgpack";
import { UnsendableValueError, encodeMessage, encodeValue } from "../../dist/index.js";

const hex = (bytes) => Buffer.from(bytes).toString("hex");

/** A string of about `units` UTF-16 units made of `char` (1 to 4 bytes of UTF-8 each), pairs kept whole. */
function text(char, units) {
  return char.repeat(Math.floor(units / char.length));
}

test("every value the library encoded right is encoded to the same bytes (shortest msgpack, as the reference encoder)", () => {
  const values = [
    null, true, false, 0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER,
    -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, Number.MIN_SAFE_INTEGER,
    0.5, -1.25, 1e300, 2 ** 53, -(2 ** 60), NaN, Infinity, -Infinity, Math.PI,
    new Uint8Array(0), new Uint8Array(255).fill(7), new Uint8Array(256), new Uint8Array(65535), new Uint8Array(65536),
    [], Array(15).fill(1), Array(16).fill(1), Array(65535).fill(0), Array(65536).fill(0),
    {}, Object.fromEntries(Array.from({ length: 15 }, (_, i) => [`k${i}`, i])),
    Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, i])),
    Object.fromEntries(Array.from({ length: 65536 }, (_, i) => [`k${i}`, i])),
    { nested: [1, "two", null, true, { deeper: [new Uint8Array([1, 2])] }] },
    new Date(0), new Date(1_767_225_600_123), new Date(-1), new Date(-62_135_596_800_000), new Date(2 ** 34 * 1000),
    new ExtData(5, new Uint8Array([1])), new ExtData(7, new Uint8Array(3)), new ExtData(-2, new Uint8Array(16)),
    new ExtData(9, new Uint8Array(300)), new ExtData(9, new Uint8Array(70000)),
  ];
  for (const char of ["a", "é", "€", "😀"]) {
    for (const units of [0, 1, 10, 11, 31, 32, 63, 64, 85, 86, 255, 256, 21845, 21846, 65535, 65536, 70000]) {
      values.push(text(char, units));
    }
  }
  for (const value of values) {
    const label = typeof value === "string" ? `a string of ${value.length} units` : String(value).slice(0, 40);
    assert.equal(hex(encodeValue(value)), hex(libraryEncode(value)), label);
  }
});

test("a Map becomes a msgpack map with its keys as they are: str, int, float, bool, nil, bin, bigint", () => {
  const map = new Map([[1, "one"], ["1", "string one"], [1.5, "float"], [true, "bool"], [null, "nil"], [new Uint8Array([0xff]), "bin"], [2n ** 40n, "big"]]);
  assert.equal(
    hex(encodeValue(map)),
    "87" + "01a36f6e65" + "a131aa737472696e67206f6e65" + "cb3ff8000000000000a5666c6f6174" + "c3a4626f6f6c" + "c0a36e696c" +
      "c401ffa362696e" + "cf0000010000000000a3626967",
  );
  assert.equal(hex(encodeValue(new Map())), "80");
  assert.equal(hex(encodeValue(new Map(Array.from({ length: 16 }, (_, i) => [i, i])))).slice(0, 6), "de0010");
  // Nested in arrays and objects, and holding containers as values.
  assert.deepEqual(decode(encodeValue({ m: new Map([["a", [new Map([[2, "b"]])]]]) })), { m: { a: [{ 2: "b" }] } });
});

test("-0 stays a float, bigints within 64 bits are integers, undefined and holes are nil", () => {
  assert.equal(hex(encodeValue(-0)), "cb8000000000000000");
  assert.equal(hex(encodeValue(5n)), "05");
  assert.equal(hex(encodeValue(-(2n ** 63n))), "d38000000000000000");
  assert.equal(hex(encodeValue(2n ** 64n - 1n)), "cfffffffffffffffff");
  assert.equal(hex(encodeValue(-(2n ** 31n) - 1n)), "d3ffffffff7fffffff");
  assert.equal(hex(encodeValue([undefined, , null])), "93c0c0c0"); // eslint-disable-line no-sparse-arrays
  assert.equal(hex(encodeValue({ a: undefined })), "81a161c0");
});

test("bytes in any byte container become bin: Buffer, Uint8ClampedArray, ArrayBuffer, DataView (its window only)", () => {
  const backing = new Uint8Array([9, 1, 2, 3, 9]);
  for (const value of [
    Buffer.from([1, 2, 3]),
    new Uint8ClampedArray([1, 2, 3]),
    new Uint8Array([1, 2, 3]).buffer,
    new DataView(backing.buffer, 1, 3),
    backing.subarray(1, 4),
  ]) {
    assert.equal(hex(encodeValue(value)), "c403010203", value.constructor.name);
  }
});

/** The refusal for `value` as argument 1 of a call: its message. */
function refusal(value) {
  try {
    encodeMessage([2, 1, "m", ["fine", { deep: [value] }]]);
  } catch (e) {
    assert.ok(e instanceof UnsendableValueError && e instanceof TypeError, String(e));
    assert.equal(e.path, "args[1].deep[0]");
    return e.problem;
  }
  assert.fail(`${String(value)} was encoded`);
}

test("values msgpack cannot carry as they are are refused, saying what and where, never encoded as {}", () => {
  class Point {
    constructor() {
      this.x = 1;
    }
  }
  const cases = [
    [new Set([1]), /a Set cannot be sent .*\[\.\.\.value\]/],
    [new Float64Array([1.5]), /a Float64Array cannot be sent .*byte order.*Array\.from/],
    [new Int8Array([1]), /a Int8Array cannot be sent/],
    [new Uint16Array([1]), /a Uint16Array cannot be sent/],
    [new BigInt64Array([1n]), /a BigInt64Array cannot be sent/],
    [new Point(), /a Point cannot be sent: only plain objects and Maps/],
    [/x/, /a RegExp cannot be sent/],
    [new Error("boom"), /a Error cannot be sent/],
    [Promise.resolve(1), /a Promise cannot be sent/],
    [new WeakMap(), /a WeakMap cannot be sent/],
    [new String("boxed"), /a String cannot be sent/],
    [new URL("http://127.0.0.1/"), /a URL cannot be sent/],
    [() => 1, /a function cannot be sent/],
    [Symbol("s"), /a symbol cannot be sent/],
    [2n ** 64n, /does not fit in 64 bits/],
    [-(2n ** 63n) - 1n, /does not fit in 64 bits/],
    [new Date(NaN), /an invalid Date/],
    ["ab\uD800", /lone surrogate/],
    ["\uDC00" + "x".repeat(100), /lone surrogate/],
    ["x".repeat(100) + "\uD83D", /lone surrogate/],
  ];
  for (const [value, pattern] of cases) assert.match(refusal(value), pattern);
});

test("Map keys that are not scalars are refused, and the path names the key", () => {
  assert.throws(
    () => encodeMessage([3, "m", [new Map([[{ a: 1 }, "x"]])]]),
    (e) => e instanceof UnsendableValueError && e.path === "args[0][\"<Object key>\"]" && /Map key must be a string, number/.test(e.problem),
  );
  assert.throws(
    () => encodeMessage([3, "m", [new Map([["tags", new Set()]])]]),
    (e) => e.path === "args[0].tags" && /a Set/.test(e.message),
  );
  assert.throws(() => encodeMessage([3, "m", [], { "odd key": [new Set()] }]), (e) => e.path === 'kwargs["odd key"][0]');
  assert.throws(() => encodeMessage([4, 7, new Set()]), (e) => e.path === "result");
});

test("a cycle (or nesting deeper than 100) is refused", () => {
  const loop = { name: "loop" };
  loop.self = loop;
  assert.throws(() => encodeValue(loop), (e) => e instanceof UnsendableValueError && /nested more than 100 deep/.test(e.message));
  let deep = [];
  for (let i = 0; i < 99; i++) deep = [deep];
  assert.equal(decode(encodeValue(deep)).length, 1, "100 levels are fine");
  assert.throws(() => encodeValue([deep]), /nested more than 100 deep/);
});

test("plain objects from another realm and without a prototype are maps", async () => {
  const { runInNewContext } = await import("node:vm");
  assert.equal(hex(encodeValue(runInNewContext("({ a: 1 })"))), "81a16101");
  const bare = Object.create(null);
  bare.a = 1;
  assert.equal(hex(encodeValue(bare)), "81a16101");
});

test("a getter that sends while its object is being encoded gets its own buffer; both encodings are whole", () => {
  let inner = null;
  const value = {
    first: "x".repeat(40),
    get second() {
      inner = encodeValue({ inner: "y".repeat(3000) });
      return 2;
    },
    third: [1, 2, 3],
  };
  assert.deepEqual(decode(encodeValue(value)), { first: "x".repeat(40), second: 2, third: [1, 2, 3] });
  assert.deepEqual(decode(inner), { inner: "y".repeat(3000) });
  // The shared buffer works as before afterwards.
  assert.equal(hex(encodeValue([1])), "9101");
});
