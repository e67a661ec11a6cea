// Runs `twistd -n hub` from this repository as a child process for the
// integration and browser tests: loopback only, bounded waits, and only the
// process started here is ever signalled (by its pid).
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { dirname } from "node:path";

export const REPO = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const PYTHON = process.env.PYTHON ?? "python3";
const SITE_STARTED = /Site (?:\(TLS\) )?starting on (\d+)/;

export class HubProcess {
  constructor(child) {
    this.child = child;
    this.output = "";
    this.exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  }

  /** Start `twistd -n hub ARGS` (default listen: a free loopback port; `listen` replaces it, e.g. an `ssl:` description). */
  static async start(args = [], { port = 0, timeout = 20000, listen = `tcp:${port}:interface=127.0.0.1` } = {}) {
    const child = spawn(
      PYTHON,
      [
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "--nodaemon",
        "--pidfile=",
        "--logfile=-",
        "hub",
        "--listen",
        listen,
        ...args,
      ],
      {
        cwd: REPO,
        env: { ...process.env, PYTHONPATH: REPO + (process.env.PYTHONPATH ? ":" + process.env.PYTHONPATH : ""), PYTHONUNBUFFERED: "1" },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    const hub = new HubProcess(child);
    hub.port = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`twistd did not start within ${timeout} ms:\n${hub.output}`));
      }, timeout);
      const onData = (data) => {
        hub.output += data.toString();
        const match = SITE_STARTED.exec(hub.output);
        if (match) {
          clearTimeout(timer);
          resolve(Number(match[1]));
        }
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", onData);
      child.on("exit", () => {
        clearTimeout(timer);
        reject(new Error(`twistd exited before listening:\n${hub.output}`));
      });
    });
    // Keep collecting output (for failure messages), after the port is known too.
    return hub;
  }

  /** Resolve with the first match of `pattern` in the output (past or future); reject after `timeout` ms. */
  waitForOutput(pattern, timeout = 10000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const match = pattern.exec(this.output);
        if (match) {
          cleanup();
          resolve(match);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`no ${pattern} in the twistd output within ${timeout} ms:\n${this.output.slice(-3000)}`));
      }, timeout);
      const cleanup = () => {
        clearTimeout(timer);
        this.child.stdout.off("data", check);
        this.child.stderr.off("data", check);
      };
      // Registered after the collecting listeners, so this.output already holds the new data.
      this.child.stdout.on("data", check);
      this.child.stderr.on("data", check);
      check();
    });
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/hub`;
  }

  get http() {
    return `http://127.0.0.1:${this.port}`;
  }

  signal(name) {
    if (this.child.exitCode === null && this.child.signalCode === null) process.kill(this.child.pid, name);
  }

  /** SIGTERM (graceful: clients get 1001), SIGKILL after `timeout` ms. */
  async stop(timeout = 10000) {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.exited;
    this.signal("SIGCONT");
    this.signal("SIGTERM");
    const killer = setTimeout(() => this.signal("SIGKILL"), timeout);
    const result = await this.exited;
    clearTimeout(killer);
    return result;
  }
}
