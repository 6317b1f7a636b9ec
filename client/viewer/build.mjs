// Bundles src/ into one script: node build.mjs OUTFILE (CMake runs this; `npm run build`
// writes dist/viewer.js).
import { build } from "esbuild";

const outfile = process.argv[2] || "dist/viewer.js";
await build({
  entryPoints: ["src/main.js"],
  bundle: true,
  format: "iife",
  globalName: "AttnScopeViewer",
  minify: true,
  target: "es2019",
  loader: { ".css": "text" },
  logLevel: "warning",
  outfile,
});
