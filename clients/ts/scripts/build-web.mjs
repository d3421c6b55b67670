// Builds the chat page into crates/roomcast-server/src/web/assets/, which the server embeds
// with include_bytes!. Run `npm run build:web` after changing web/ or src/, and commit the
// output: CI rebuilds it and fails when the committed copy differs.

import { copyFile, mkdir } from "node:fs/promises";
import { fileURLToPath } from "node:url";

import * as esbuild from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
const out = fileURLToPath(new URL("../../../crates/roomcast-server/src/web/assets/", import.meta.url));
const banner = "/* Built from clients/ts by `npm run build:web`; do not edit. */";

await mkdir(out, { recursive: true });
await esbuild.build({
  absWorkingDir: root,
  entryPoints: ["web/app.ts", "web/app.css"],
  outdir: out,
  bundle: true,
  format: "esm",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  minify: true,
  legalComments: "none",
  charset: "utf8",
  banner: { js: banner, css: banner },
  logLevel: "warning",
});
await copyFile(new URL("../web/index.html", import.meta.url), new URL("index.html", `file://${out}`));
console.log(`built the chat page into ${out}`);
