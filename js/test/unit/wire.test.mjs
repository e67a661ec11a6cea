// The wire examples of docs/protocol.md, checked against the JavaScript codec.
import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeMulti } from "@msgpack/msgpack";
import {
  ProtocolError,
  decodeFrame,
  encodeMessage,
  parseClientMessage,
  parseServerMessage,
} from "../../dist/index.js";
import { protocolExamples } from "../protocol-md.mjs";

const { frames, invalid } = protocolExamples();
const CLIENT_SENDS = new Set([0, 2, 3, 4, 5, 8, 10, 11, 15, 16, 17, 18, 19, 21, 24]);
const SERVER_SENDS = new Set([1, 4, 5, 6, 7, 8, 9, 12, 14, 16, 17, 18, 19, 20, 22, 23, 24]);

function join(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

test("TOKEN_RESULT: accepted (short form), and refused with its error and message", () => {
  assert.deepEqual(parseServerMessage([14, 1, 3600]), { kind: 14, sequence: 1, expiresIn: 3600, error: null, message: "" });
  assert.deepEqual(parseServerMessage([14, 2, 4, "forbidden", "no"]), {
    kind: 14, sequence: 2, expiresIn: 4, error: "forbidden", message: "no",
  });
  assert.throws(() => parseServerMessage([14, 1]), /TOKEN_RESULT needs/);
  assert.throws(() => parseServerMessage([14, 1, null, 5]), /an error must be a str/);
});

test("the client encodes protocol.md's TOKEN example byte for byte", () => {
  const tokens = frames.filter((f) => f.arrays.length === 1 && f.arrays[0][0] === 13);
  assert.equal(tokens.length, 1);
  assert.deepEqual(encodeMessage(tokens[0].arrays[0]), tokens[0].payload);
});

test("protocol.md has the examples this suite relies on", () => {
  assert.ok(frames.length >= 25, `only ${frames.length} wire examples`);
  assert.ok(invalid.length >= 12, `only ${invalid.length} invalid examples`);
  assert.ok(frames.some((f) => f.arrays.length > 1), "no batched example");
});

for (const example of frames) {
  const name = `protocol.md:${example.line} ${example.literals.join(" + ")}`;

  test(`${name}: the frame decodes to exactly these messages`, () => {
    assert.deepEqual([...decodeMulti(example.payload)], example.arrays);
  });

  const kinds = example.arrays.map((a) => a[0]);
  if (kinds.every((k) => CLIENT_SENDS.has(k))) {
    test(`${name}: the client encodes it byte for byte`, () => {
      assert.deepEqual(join(example.arrays.map((a) => encodeMessage(a))), example.payload);
    });
    test(`${name}: a server-side parser accepts it`, () => {
      assert.equal(decodeFrame(example.payload, parseClientMessage).length, example.arrays.length);
    });
  }
  if (kinds.every((k) => SERVER_SENDS.has(k))) {
    test(`${name}: the client's parser accepts it`, () => {
      const messages = decodeFrame(example.payload, parseServerMessage);
      assert.deepEqual(
        messages.map((m) => m.kind),
        kinds,
      );
    });
  }
}

for (const example of invalid) {
  test(`protocol.md:${example.line} invalid (${example.why}): both parsers reject it`, () => {
    assert.throws(() => decodeFrame(example.payload, parseServerMessage), ProtocolError);
    assert.throws(() => decodeFrame(example.payload, parseClientMessage), ProtocolError);
  });
}

test("the client's parser fills in the fields of a server heartbeat with metadata", () => {
  const [beat] = decodeFrame(
    Uint8Array.from([0x94, 0x09, 0x08, 0xcf, 0x00, 0x06, 0x47, 0x48, 0x46, 0x2f, 0x82, 0x40, 0xc4, 0x02, 0x01, 0x02]),
    parseServerMessage,
  );
  assert.deepEqual(beat, { kind: 9, sequence: 8, serverTimeUs: 1767225601000000, metadata: Uint8Array.from([1, 2]) });
});

test("kwargs keys must be str in the messages a client receives too", () => {
  // [6, "moved", [], {1: "b"}], then the same with a str key
  const invalidCall = Uint8Array.from([0x94, 0x06, 0xa5, 0x6d, 0x6f, 0x76, 0x65, 0x64, 0x90, 0x81, 0x01, 0xa1, 0x62]);
  assert.throws(() => decodeFrame(invalidCall, parseServerMessage), /kwargs keys must be str/);
  const valid = encodeMessage([6, "moved", [], { room: "b" }]);
  assert.deepEqual(decodeFrame(valid, parseServerMessage)[0].kwargs, { room: "b" });
});

test("an integer map key inside an argument is a value, not an error", () => {
  const frame = Uint8Array.from([0x93, 0x06, 0xa1, 0x6d, 0x91, 0x81, 0x01, 0xa1, 0x62]); // [6, "m", [{1: "b"}]]
  assert.deepEqual(decodeFrame(frame, parseServerMessage)[0].args, [{ 1: "b" }]);
});

test("direction is enforced: a client rejects kinds only clients send", () => {
  for (const kind of [0, 2, 3, 10, 11, 15]) {
    assert.throws(() => parseServerMessage([kind, 1]), /never sent by a server/);
  }
  for (const kind of [1, 6, 7, 9, 12]) {
    assert.throws(() => parseClientMessage([kind, 1]), /never sent by a client/);
  }
});

test("WELCOME: caps, id, hb, max and expires_in are read; missing ones get their defaults", () => {
  assert.deepEqual(parseServerMessage([1, { caps: ["batch"], id: "x", hb: [20, null], max: 10, expires_in: 2.5 }]), {
    kind: 1,
    capabilities: ["batch"],
    connectionId: "x",
    heartbeat: [20, null],
    maxMessageSize: 10,
    expiresIn: 2.5,
  });
  assert.deepEqual(parseServerMessage([1, {}]), {
    kind: 1,
    capabilities: [],
    connectionId: "",
    heartbeat: null,
    maxMessageSize: null,
    expiresIn: null,
  });
  assert.throws(() => parseServerMessage([1, { expires_in: -1 }]), /expires_in/);
  assert.throws(() => parseServerMessage([1, { expires_in: "soon" }]), /expires_in/);
  assert.throws(() => parseServerMessage([1, { max: 0 }]), /max must be a positive integer/);
  assert.throws(() => parseServerMessage([1, { hb: [1] }]), /hb must be/);
  assert.throws(() => parseServerMessage([1, { caps: [1] }]), /caps must be an array of str/);
});

// -- capability resume (protocol.md section 10): codec only ------------------

const TOKEN = Uint8Array.from({ length: 32 }, (_, i) => i);

test("resume messages: every kind 20-24 and the heartbeats' ack parse to their fields", () => {
  assert.deepEqual(parseServerMessage([20, TOKEN, 120]), { kind: 20, token: TOKEN, window: 120 });
  assert.deepEqual(parseServerMessage([22, 17, TOKEN, "c-1"]), { kind: 22, received: 17, token: TOKEN, connectionId: "c-1" });
  assert.deepEqual(parseServerMessage([23, "window-expired", "gone"]), { kind: 23, reason: "window-expired", message: "gone" });
  assert.deepEqual(parseServerMessage([23, "a-future-reason", ""]), { kind: 23, reason: "a-future-reason", message: "" });
  assert.deepEqual(parseServerMessage([24, 300]), { kind: 24, received: 300 });
  assert.deepEqual(parseClientMessage([21, TOKEN, 41]), { kind: 21, token: TOKEN, received: 41 });
  assert.deepEqual(parseClientMessage([21, TOKEN, 41, 18]), { kind: 21, token: TOKEN, received: 41, sent: 18 });
  assert.deepEqual(parseClientMessage([24, 0]), { kind: 24, received: 0 });
  assert.deepEqual(parseClientMessage([10, 7, 41]), { kind: 10, sequence: 7, ack: 41 });
  assert.deepEqual(parseClientMessage([10, 7]), { kind: 10, sequence: 7 });
  assert.deepEqual(parseClientMessage([11, 3, -5, 41]), { kind: 11, sequence: 3, clientTime: -5, ack: 41 });
  assert.deepEqual(parseServerMessage([12, 3, -5, 9, 17]), { kind: 12, sequence: 3, clientTime: -5, serverTimeUs: 9, ack: 17 });
  assert.equal("ack" in parseServerMessage([12, 3, -5, 9]), false);
});

test("resume messages round-trip through the encoder and the frame decoder", () => {
  const frames = [
    [[20, TOKEN, 0.5], parseServerMessage],
    [[22, 0, TOKEN, ""], parseServerMessage],
    [[23, "token-invalid", "no"], parseServerMessage],
    [[24, 2 ** 40], parseServerMessage],
    [[21, TOKEN, 2 ** 40], parseClientMessage],
    [[24, 1], parseClientMessage],
  ];
  for (const [fields, parse] of frames) {
    const [message] = decodeFrame(encodeMessage(fields), parse);
    assert.equal(message.kind, fields[0]);
    assert.deepEqual(Object.values(message).slice(1), fields.slice(1), JSON.stringify(fields));
  }
});

test("every malformed resume message is a protocol error", () => {
  const server = [
    [[20, TOKEN], /SESSION needs 3/],
    [[20, TOKEN, 1, 2], /SESSION needs 3/],
    [[20, "t".repeat(32), 1], /session token must be bin/],
    [[20, TOKEN.subarray(0, 15), 1], /16 to 64 bytes/],
    [[20, new Uint8Array(65), 1], /16 to 64 bytes/],
    [[20, TOKEN, 0], /bad window/],
    [[20, TOKEN, -1], /window/],
    [[20, TOKEN, null], /window/],
    [[20, TOKEN, true], /window/],
    [[22, 1, TOKEN], /RESUMED needs 4/],
    [[22, 1, TOKEN, "c", 1], /RESUMED needs 4/],
    [[22, -1, TOKEN, "c"], /received must be an unsigned integer/],
    [[22, 1, null, "c"], /session token must be bin/],
    [[22, 1, TOKEN, null], /a connection id must be a str/],
    [[23, "x"], /RESUME_REFUSED needs 3/],
    [[23, null, ""], /a reason must be a str/],
    [[23, "x", null], /a message must be a str/],
    [[24], /ACK needs 2/],
    [[24, 1, 2], /ACK needs 2/],
    [[24, true], /received must be/],
    [[24, -1], /received must be/],
    [[12, 1, 2, 3, -1], /an ack must be/],
    [[12, 1, 2, 3, 4, 5], /CLIENT_HEARTBEAT_ACK needs 4 to 5/],
    [[21, TOKEN, 1], /never sent by a server/],
  ];
  for (const [fields, pattern] of server) {
    assert.throws(() => parseServerMessage(fields), pattern, JSON.stringify(fields));
  }
  const client = [
    [[21, TOKEN], /RESUME needs 3 to 4/],
    [[21, TOKEN, 1, 2, 3], /RESUME needs 3 to 4/],
    [[21, TOKEN, 1, null], /sent must be/],
    [[21, TOKEN, 1, -1], /sent must be/],
    [[21, TOKEN, 1.5], /received must be/],
    [[21, new Uint8Array(8), 1], /16 to 64 bytes/],
    [[10, 1, null], /an ack must be/],
    [[10, 1, 2, 3], /SERVER_HEARTBEAT_ACK needs 2 to 3/],
    [[11, 1, 2, "3"], /an ack must be/],
    [[20, TOKEN, 1], /never sent by a client/],
    [[22, 1, TOKEN, "c"], /never sent by a client/],
    [[23, "x", ""], /never sent by a client/],
    [[25, 1], /unknown message kind 25/],
  ];
  for (const [fields, pattern] of client) {
    assert.throws(() => parseClientMessage(fields), pattern, JSON.stringify(fields));
  }
});
