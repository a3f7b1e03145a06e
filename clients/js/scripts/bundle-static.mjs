// Build streamcore/static/streamcore.js (the browser module `streamcore serve` ships at
// /streamcore.js) from the same TypeScript source as the npm package: one dependency-free
// ES module. The output is committed so the Python package works without Node.
//
//   node scripts/bundle-static.mjs          # write it
//   node scripts/bundle-static.mjs --check  # exit 1 if the committed file is out of date
import { build } from "esbuild";
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, resolve } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(here, "../../../streamcore/static/streamcore.js");
const banner = `// streamcore.js: the browser client of the streamcore protocol (reconnection with backoff,
// offline queue, events, resume of interrupted replies, reasoning, typed errors).
//
//   import { StreamcoreClient } from "/streamcore.js";
//   const client = new StreamcoreClient({ url: "ws://127.0.0.1:8000/ws" });
//   await client.connect();
//   const reply = client.sendMessage("Bonjour !", { onChunk: (text, all) => (el.textContent = all) });
//   const end = await reply.done;          // the AI_MESSAGE_END data
//
// GENERATED from clients/js/src (npm run build in clients/js): do not edit by hand.
// Model text is data: render it with textContent, never innerHTML.`;

const result = await build({
  entryPoints: [resolve(here, "../src/index.ts")],
  bundle: true,
  format: "esm",
  target: "es2020",
  platform: "browser",
  charset: "utf8",
  legalComments: "none",
  banner: { js: banner },
  write: false,
  logLevel: "warning",
});
const text = result.outputFiles[0].text;
if (process.argv.includes("--check")) {
  const current = existsSync(out) ? readFileSync(out, "utf8") : "";
  if (current !== text) {
    console.error("streamcore/static/streamcore.js is out of date: run `npm run build` in clients/js and commit it");
    process.exit(1);
  }
  console.log("streamcore/static/streamcore.js is up to date");
} else {
  writeFileSync(out, text);
  console.log(`wrote ${out} (${text.length} bytes)`);
}
