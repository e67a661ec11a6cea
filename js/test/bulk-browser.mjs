// The slow-link bulk client (see bulk-client.mjs, same arguments and lines)
// in a real headless Chromium page: the served bundle, the browser's own
// WebSocket.  Run by tests/test_slow_link_processes.py; the browser is
// started and closed here.  READY's port is 0: a page cannot see its
// socket's local port.
import { readFileSync } from "node:fs";
import puppeteer from "puppeteer-core";

const args = process.argv.slice(2);
const url = args[0];
const option = (name, fallback) => {
  const at = args.indexOf(name);
  return at === -1 ? fallback : args.slice(at + 1, at + 3);
};
const settings = {
  url,
  calls: Number(option("--calls", ["3"])[0]),
  size: Number(option("--size", ["900000"])[0]),
  heartbeat: option("--heartbeat", null),
};
settings.inFlight = Number(option("--in-flight", ["0"])[0]) || settings.calls;
const bundle = readFileSync(new URL("../../twisted_hub/static/twisted-hub.js", import.meta.url), "utf8");
const say = (line) => process.stdout.write(line + "\n");

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const stop = async (code) => {
  await browser.close().catch(() => {});
  process.exit(code);
};
process.on("SIGTERM", () => stop(1));
try {
  const page = await browser.newPage();
  page.on("pageerror", (error) => process.stderr.write(`page error: ${error}\n`));
  await page.exposeFunction("say", say);
  let go;
  const started = new Promise((resolve) => (go = resolve));
  await page.exposeFunction("whenGo", () => started);
  if (args.includes("--wait-go")) process.stdin.once("data", () => go());
  else go();
  const closed = page.evaluate(async (bundle, s) => {
    const hub = await import(URL.createObjectURL(new Blob([bundle], { type: "text/javascript" })));
    let client = null;
    client = await hub.connect(s.url, "probe", {
      maxMessageSize: 4 * 1024 * 1024,
      callTimeout: 120_000,
      ...(s.heartbeat ? { heartbeatInterval: Number(s.heartbeat[0]) * 1000, heartbeatTimeout: Number(s.heartbeat[1]) * 1000 } : {}),
      log: { debug() {}, info: (m) => m.includes("stalled") && say(`STALLED ${m}`), warn() {}, error() {} },
      onDisconnected: (reason) => {
        say(`CLOSED ${reason.kind} ${reason.message}`);
        say(`AVOIDED ${client?.timeoutsAvoided ?? 0}`);
      },
    });
    await say(`READY ${client.connectionId} 0`);
    await whenGo();
    const payload = (index) => new Uint8Array(s.size).fill(65 + (index % 26));
    const equal = (a, b) => a instanceof Uint8Array && a.length === b.length && a.every((byte, i) => byte === b[i]);
    const t0 = performance.now();
    const seconds = () => ((performance.now() - t0) / 1000).toFixed(3);
    let next = 0;
    const caller = async () => {
      while (next < s.calls) {
        const index = next++;
        await client.call("echo", payload(index)).then(
          (value) => say(`RESULT ${index} ${equal(value, payload(index)) ? "ok" : `wrong ${value?.length}`} ${seconds()}`),
          (error) => say(`FAILED ${index} ${error}`),
        );
      }
    };
    await Promise.all(Array.from({ length: Math.min(s.inFlight, s.calls) }, caller));
    await say(`DONE ${seconds()}`);
    if (client.isConnected) await client.disconnect();
    await new Promise((resolve) => setTimeout(resolve, 100));
  }, bundle, settings);
  await closed;
  await stop(0);
} catch (error) {
  say(`FAILED browser ${error}`);
  await stop(1);
}
