// Access tokens (docs/auth.md): where the client puts them, the refresh
// before expiry, and the token-expired close; fake socket, fake clock.
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { DisconnectKind, HandshakeError, ReconnectingHubClient, connect } from "../../dist/index.js";
import { FakeClock, FakeWebSocket, settle } from "../fakes.mjs";

let clock;
let warnings;

beforeEach(() => {
  FakeWebSocket.instances = [];
  clock = new FakeClock();
  warnings = [];
});

function options(extra = {}) {
  const log = { debug() {}, info() {}, warn: (m) => warnings.push(m), error() {} };
  return { WebSocket: FakeWebSocket, clock, log, ...extra };
}

const JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2lnbmF0dXJl_-";
const REFRESHING = { caps: ["heartbeat", "batch", "token-refresh"], id: "c-1", max: 1048576 };

/** A client connected with `accessToken`, the server's WELCOME saying the token expires in `expiresIn` s. */
async function connected(accessToken, expiresIn, caps = REFRESHING.caps) {
  const ready = connect("ws://127.0.0.1:1/hub", "notes", options({ accessToken }));
  await settle();
  const ws = FakeWebSocket.latest();
  ws.open();
  const hello = ws.takeMessages();
  ws.welcome({ ...REFRESHING, caps, ...(expiresIn === undefined ? {} : { expires_in: expiresIn }) });
  return { client: await ready, ws, hello };
}

test("a token of HTTP token characters (a JWT) goes in a subprotocol; the URL stays clean", async () => {
  connect("ws://127.0.0.1:1/hub", "notes", options({ accessToken: JWT }));
  const ws = FakeWebSocket.latest();
  assert.deepEqual(ws.protocols, ["twisted-hub.v1", `twisted-hub.bearer.${JWT}`]);
  assert.equal(ws.url, "ws://127.0.0.1:1/hub/notes");
});

test("another token goes in the query, encoded, after any query the URL had", async () => {
  connect("ws://127.0.0.1:1/hub?v=2", "notes", options({ accessToken: "a/b=+c d" }));
  const ws = FakeWebSocket.latest();
  assert.deepEqual(ws.protocols, ["twisted-hub.v1"]);
  assert.equal(ws.url, "ws://127.0.0.1:1/hub/notes?v=2&access_token=a%2Fb%3D%2Bc%20d");
});

test("an async provider is awaited before the socket opens; null sends no token", async () => {
  let resolve;
  connect("ws://127.0.0.1:1/hub", "notes", options({ accessToken: () => new Promise((r) => (resolve = r)) }));
  await settle();
  assert.equal(FakeWebSocket.instances.length, 0);
  resolve(JWT);
  await settle();
  assert.deepEqual(FakeWebSocket.latest().protocols, ["twisted-hub.v1", `twisted-hub.bearer.${JWT}`]);
  connect("ws://127.0.0.1:1/hub", "notes", options({ accessToken: () => null }));
  assert.deepEqual(FakeWebSocket.latest().protocols, ["twisted-hub.v1"]);
});

test("a provider that fails, or never answers within connectTimeout, fails the connect", async () => {
  const failing = connect("ws://h:1/hub", "notes", options({ accessToken: async () => Promise.reject(new Error("idp down")) }));
  await assert.rejects(failing, (e) => e instanceof HandshakeError && /idp down/.test(e.reason));
  const hanging = connect("ws://h:1/hub", "notes", options({ accessToken: () => new Promise(() => {}), connectTimeout: 1000 }));
  clock.advance(1000);
  await assert.rejects(hanging, HandshakeError);
  assert.equal(FakeWebSocket.instances.length, 0);
});

test("HELLO announces token-refresh only with a provider function", async () => {
  const withProvider = await connected(() => JWT, undefined);
  assert.deepEqual(withProvider.hello, [[0, { caps: ["heartbeat", "batch", "stream", "token-refresh"], max: 1048576 }]]);
  const fixed = await connected(JWT, undefined);
  assert.deepEqual(fixed.hello, [[0, { caps: ["heartbeat", "batch", "stream"], max: 1048576 }]]);
});

test("before expiry the provider is asked again and the fresh token sent; the answer sets the next refresh", async () => {
  const tokens = ["t1", "t2", "t3"];
  const { client, ws } = await connected(async () => tokens.shift(), 100);
  clock.advance(79_999);
  await settle();
  assert.deepEqual(ws.takeMessages(), []);
  clock.advance(1); // a fifth of 100 s left
  await settle();
  assert.deepEqual(ws.takeMessages(), [[13, 1, "t2"]]);
  ws.deliver([14, 1, 3600]); // the new token: an hour, refreshed a minute before it expires
  clock.advance(3539_999);
  await settle();
  assert.deepEqual(ws.takeMessages(), []);
  clock.advance(1);
  await settle();
  assert.deepEqual(ws.takeMessages(), [[13, 2, "t3"]]);
  ws.deliver([14, 2, null]); // does not expire: no more refreshes
  clock.advance(10_000_000);
  await settle();
  assert.deepEqual(ws.takeMessages(), []);
  assert.equal(client.isConnected, true);
});

test("a refused token, or a failing provider, is retried when half of what is left has passed", async () => {
  let fail = false;
  const { ws } = await connected(async () => {
    if (fail) throw new Error("idp down");
    return "fresh";
  }, 100);
  fail = true;
  clock.advance(80_000); // provider fails: 20 s left, retry in 10 s
  await settle();
  assert.deepEqual(ws.takeMessages(), []);
  assert.match(warnings.join("\n"), /idp down/);
  fail = false;
  clock.advance(10_000);
  await settle();
  assert.deepEqual(ws.takeMessages(), [[13, 1, "fresh"]]);
  ws.deliver([14, 1, 10, "unauthenticated", "token expired"]); // refused: 10 s left, retry in 5 s
  assert.match(warnings.join("\n"), /unauthenticated token expired/);
  clock.advance(4_999);
  await settle();
  assert.deepEqual(ws.takeMessages(), []);
  clock.advance(1);
  await settle();
  assert.deepEqual(ws.takeMessages(), [[13, 2, "fresh"]]);
});

test("no refresh with a fixed token, or to a server that did not announce token-refresh", async () => {
  const fixed = await connected(JWT, 100);
  clock.advance(200_000);
  await settle();
  assert.deepEqual(fixed.ws.takeMessages(), []);
  const old = await connected(() => JWT, 100, ["heartbeat", "batch"]);
  clock.advance(200_000);
  await settle();
  assert.deepEqual(old.ws.takeMessages(), []);
});

test("the server's 4005 close is reported as token-expired", async () => {
  const { client, ws } = await connected(JWT, 1);
  ws.deliver([8, 4005, "token expired"]);
  ws.serverClose(4005, "token expired");
  const reason = await client.waitForDisconnect();
  assert.deepEqual(reason, { kind: DisconnectKind.TOKEN_EXPIRED, code: 4005, message: "token expired", locally: false });
  assert.equal(DisconnectKind.TOKEN_EXPIRED, "token-expired");
});

test("ReconnectingHubClient asks the provider at every connection", async () => {
  let asked = 0;
  const service = new ReconnectingHubClient("ws://127.0.0.1:1/hub", "notes", {
    ...options({ accessToken: () => `token-${++asked}` }),
    retry: { initialDelay: 1000, random: () => 0.999 },
  });
  service.start();
  let ws = FakeWebSocket.latest();
  assert.deepEqual(ws.protocols, ["twisted-hub.v1", "twisted-hub.bearer.token-1"]);
  ws.open();
  ws.welcome(REFRESHING);
  await settle();
  ws.serverClose(4005, "token expired");
  await settle();
  clock.advance(1000);
  await settle();
  ws = FakeWebSocket.latest();
  assert.deepEqual(ws.protocols, ["twisted-hub.v1", "twisted-hub.bearer.token-2"]);
  await service.stop();
});
