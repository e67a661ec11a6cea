// Build: dist/index.js (ES module, msgpack external: for bundlers and Node),
// dist/twisted-hub.min.js (one minified ES module with msgpack inside: the
// file the hub serves), dist/*.d.ts (tsc).  `--check` only reports the
// gzipped size of the served bundle.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { readFileSync, mkdirSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
mkdirSync(join(root, "dist"), { recursive: true });
const common = {
  entryPoints: [join(root, "src/index.ts")],
  bundle: true,
  format: "esm",
  target: "es2020",
  platform: "neutral",
  logLevel: "warning",
  legalComments: "none",
};
await build({ ...common, outfile: join(root, "dist/index.js"), external: ["@msgpack/msgpack"] });
await build({ ...common, outfile: join(root, "dist/twisted-hub.min.js"), minify: true, mainFields: ["module", "main"] });
execFileSync(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", join(root, "tsconfig.json")], {
  stdio: "inherit",
});
const bundle = readFileSync(join(root, "dist/twisted-hub.min.js"));
console.log(`dist/twisted-hub.min.js: ${bundle.length} bytes, ${gzipSync(bundle, { level: 9 }).length} bytes gzipped`);
