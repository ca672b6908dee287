// Compiles every assembly/<name>.ts that is a plugin entry (not common.ts) to build/as_<name>.wasm.
// Flags: proxy-runtime needs `--use abort=abort_proc_exit` (its abort logs then exits through
// WASI) and the default full runtime (its malloc uses rt/index-full).
"use strict";
const { execFileSync } = require("child_process");
const fs = require("fs");
const path = require("path");

const root = __dirname;
const asc = path.join(root, "node_modules", "assemblyscript", "bin", "asc");
const entries = fs
  .readdirSync(path.join(root, "assembly"))
  .filter((f) => f.endsWith(".ts") && f !== "common.ts" && !f.endsWith(".d.ts"));
fs.mkdirSync(path.join(root, "build"), { recursive: true });
for (const entry of entries) {
  const name = "as_" + entry.replace(/\.ts$/, "");
  const out = path.join("build", name + ".wasm");
  execFileSync(
    process.execPath,
    [asc, path.join("assembly", entry), "-b", out, "--use", "abort=abort_proc_exit", "-O3"],
    { cwd: root, stdio: "inherit" }
  );
  console.log("built " + out);
}
