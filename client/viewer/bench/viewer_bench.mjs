// Viewer benchmark (not a test): a T=2,048 capture of every layer of the tiny model, written
// by `attnscope view` and opened in headless chromium. Prints the writer's time, the first
// render (navigation start to grid + heatmap + strip drawn; median of 3 loads), the time until
// the whole page is read (the embedded matrices follow the viewer's script), the hover update
// (event to the next frame; median and max of 30 tokens) and the head switch, each against the
// same figure for a T=256 capture of this run. Goals: first render < 2 s, hover < 50 ms.
//
//   ATTNSCOPE_BUILD_DIR=build node client/viewer/bench/viewer_bench.mjs [--tokens 2048]
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { launch } from "../test/browser.mjs";

const buildDir = resolve(process.env.ATTNSCOPE_BUILD_DIR || "build");
const cli = join(buildDir, "client/cpp/attnscope");
const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const TOKENS = arg("--tokens", 2048);
const BASELINE_TOKENS = 256;
const GENERATED = 8;
const HOVERS = 30;

const work = mkdtempSync(join(tmpdir(), "attnscope-viewer-bench-"));
const sentence = "Net sales rose 8% while revenue and cash from operations increased; debt fell. ";

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

// The tiny model's tokenizer is byte-level: one token per byte of this ASCII text.
function makeCapture(total) {
  const text = sentence.repeat(Math.ceil(total / sentence.length)).slice(0, total - GENERATED);
  const path = join(work, `capture-${total}.safetensors`);
  execFileSync(cli, ["capture", "--model", join(work, "tiny"), "--text", text, "--max-new-tokens",
    String(GENERATED), "--ignore-eos", "--greedy", "--dtype", "float16", "--layers", "all", "--out", path, "--quiet"]);
  const html = join(work, `view-${total}.html`);
  const start = performance.now();
  execFileSync(cli, ["view", path, "--out", html]);
  const writeMs = performance.now() - start;
  return { path, html, writeMs, captureBytes: statSync(path).size, htmlBytes: statSync(html).size };
}

const LOADS = 3; // page loads per capture; the median is reported

async function load(browser, html) {
  const page = await browser.context.newPage();
  await page.goto(`file://${html}`);
  await page.waitForSelector("#attnscope[data-rendered=true]", { timeout: 120000 });
  await page.waitForFunction(() => document.readyState === "complete");
  const info = await page.evaluate(() => ({
    firstRenderMs: window.attnscopeViewer.stats.firstRenderMs,
    loadedMs: performance.getEntriesByType("navigation")[0].domContentLoadedEventEnd,
    tokens: window.attnscopeViewer.data.size,
    layers: window.attnscopeViewer.data.layers.length,
    heads: window.attnscopeViewer.data.heads.length,
  }));
  return { page, info };
}

async function measure(browser, html) {
  const loads = [];
  let page = null;
  for (let i = 0; i < LOADS; ++i) {
    if (page) await page.close();
    const loaded = await load(browser, html);
    page = loaded.page;
    loads.push(loaded.info);
  }
  const info = {
    ...loads[0],
    firstRenderMs: median(loads.map((l) => l.firstRenderMs)),
    loadedMs: median(loads.map((l) => l.loadedMs)),
  };
  const hovers = [];
  for (let k = 0; k < HOVERS; ++k) {
    const pos = Math.floor(((k + 0.5) * info.tokens) / HOVERS);
    await page.evaluate(() => (window.attnscopeViewer.stats.lastHoverMs = null));
    await page.hover(`.as-tok[data-pos="${pos}"]`);
    await page.waitForFunction(() => window.attnscopeViewer.stats.lastHoverMs !== null);
    hovers.push(await page.evaluate(() => window.attnscopeViewer.stats.lastHoverMs));
  }
  // Head switch: decode the embedded matrix, build the level pyramid, draw.
  const switchMs = await page.evaluate(async () => {
    const v = window.attnscopeViewer;
    const t0 = performance.now();
    await v.select(v.data.layers[0], v.data.heads[1]);
    await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
    return performance.now() - t0;
  });
  await page.close();
  return { ...info, hoverMedian: median(hovers), hoverMax: Math.max(...hovers), switchMs };
}

try {
  statSync(cli);
  execFileSync(cli, ["make-tiny-model", join(work, "tiny")]);
  const big = makeCapture(TOKENS);
  const small = makeCapture(BASELINE_TOKENS);
  const browser = await launch();
  await measure(browser, small.html); // warm the browser's caches once
  const base = await measure(browser, small.html);
  const result = await measure(browser, big.html);
  await browser.close();
  const mb = (n) => (n / 1e6).toFixed(1);
  console.log(`capture T=${result.tokens}, ${result.layers} layers x ${result.heads} heads, float16: ` +
    `${mb(big.captureBytes)} MB; view.html ${mb(big.htmlBytes)} MB (T=${base.tokens}: ${mb(small.htmlBytes)} MB)`);
  const rows = [
    ["attnscope view (write html) ms", big.writeMs, small.writeMs],
    ["first render ms (goal < 2000)", result.firstRenderMs, base.firstRenderMs],
    ["whole page read (all embedded matrices) ms", result.loadedMs, base.loadedMs],
    ["hover update median ms (goal < 50)", result.hoverMedian, base.hoverMedian],
    ["hover update max ms", result.hoverMax, base.hoverMax],
    ["head switch ms", result.switchMs, base.switchMs],
  ];
  for (const [figure, value, baseline] of rows) {
    console.log(`${figure}: ${value.toFixed(1)} at T=${result.tokens} vs ${baseline.toFixed(1)} at T=${base.tokens} (x${(value / baseline).toFixed(2)})`);
    console.log(`BENCH\t${figure} T=${result.tokens} (baseline T=${base.tokens})\t${value.toFixed(1)}\t${baseline.toFixed(1)}\t${(value / baseline).toFixed(2)}`);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
