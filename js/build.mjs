// Build: dist/index.js (ES module, msgpack external: for bundlers and Node),
// dist/twisted-hub.min.js (one minified ES module with msgpack inside: the
// file the hub serves), dist/*.d.ts (tsc).  dist/ is emptied first, so the
// npm package (`npm pack` runs this as `prepack`) holds only what js/src builds.
// `--vendor` also copies the bundle to ../twisted_hub/static/twisted-hub.js,
// the copy that ships in the Python wheel (tests/test_javascript.py checks
// the two are the same bytes).
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { copyFileSync, readFileSync, mkdirSync, rmSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
rmSync(join(root, "dist"), { recursive: true, force: true });
mkdirSync(join(root, "dist"));
const common = {
  entryPoints: [join(root, "src/index.ts")],
  bundle: true,
  format: "esm",
  target: "es2022",
  platform: "neutral",
  logLevel: "warning",
  legalComments: "none",
};
await build({ ...common, outfile: join(root, "dist/index.js"), external: ["@msgpack/msgpack"] });
const version = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version;
// ISC asks for its copyright and permission notice in every copy: keep it whole.
const msgpackLicense = readFileSync(join(root, "node_modules/@msgpack/msgpack/LICENSE"), "utf8").trim().replace(/\*\//g, "* /");
await build({
  ...common,
  outfile: join(root, "dist/twisted-hub.min.js"),
  minify: true,
  mainFields: ["module", "main"],
  banner: { js: `/*! twisted-hub ${version} browser client (MIT license).\nIncludes @msgpack/msgpack (ISC license):\n${msgpackLicense}\n*/` },
});
execFileSync(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", join(root, "tsconfig.json")], {
  stdio: "inherit",
});
const bundle = readFileSync(join(root, "dist/twisted-hub.min.js"));
console.log(`dist/twisted-hub.min.js: ${bundle.length} bytes, ${gzipSync(bundle, { level: 9 }).length} bytes gzipped`);
if (process.argv.includes("--vendor")) {
  copyFileSync(join(root, "dist/twisted-hub.min.js"), join(root, "../twisted_hub/static/twisted-hub.js"));
  console.log("copied to twisted_hub/static/twisted-hub.js");
}
