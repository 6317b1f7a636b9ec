// The viewer in a real browser (Debian's chromium through playwright-core), on a real capture
// made by the real `attnscope capture` on the tiny model. Expected values come from the
// capture file, read by this test's own reader (capture_reader.mjs), never from the viewer.
//
//   ATTNSCOPE_BUILD_DIR=build node --test client/viewer/test/viewer.test.mjs
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { connect } from "node:net";
import { join, resolve } from "node:path";
import { launch } from "./browser.mjs";
import { readCapture, topKeys } from "./capture_reader.mjs";

const buildDir = resolve(process.env.ATTNSCOPE_BUILD_DIR || "build");
const cli = join(buildDir, "client/cpp/attnscope");
const artifacts = join(buildDir, "test-artifacts");
const TOP = 8; // the viewer highlights its TOP_KEYS = 8 strongest keys
const TEXT = "Net sales rose 8% while revenue and cash from operations increased; debt fell.";

let work, capturePath, capture, browser;

function run(...args) {
  return execFileSync(cli, args, { encoding: "utf8" });
}

before(async () => {
  statSync(cli); // the test needs the built command line: fail, do not skip
  work = mkdtempSync(join(tmpdir(), "attnscope-viewer-test-"));
  mkdirSync(artifacts, { recursive: true });
  run("make-tiny-model", join(work, "tiny"));
  capturePath = join(work, "capture.safetensors");
  run("capture", "--model", join(work, "tiny"), "--text", TEXT, "--max-new-tokens", "10", "--greedy",
    "--out", capturePath);
  run("analyze", "--from", capturePath, "--json");
  capture = readCapture(capturePath);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function openPage(url) {
  const page = await browser.context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  page.on("requestfailed", (request) => errors.push(`request failed: ${request.url()}`));
  await page.goto(url);
  await page.waitForSelector("#attnscope[data-rendered=true]", { timeout: 60000 });
  return { page, errors };
}

// The strip's highlighted positions in rank order, after hovering token `pos`.
async function hoverToken(page, pos) {
  await page.hover(`.as-tok[data-pos="${pos}"]`);
  return page.evaluate(() =>
    [...document.querySelectorAll(".as-tok.as-hit")]
      .sort((a, b) => a.dataset.rank - b.dataset.rank)
      .map((span) => Number(span.dataset.pos)),
  );
}

// Highlighted positions must be the expected top list; where two keys tie within `tolerance`
// (layer means are summed in another order), either order is right.
function assertTop(highlighted, expected, weightOf, tolerance, what) {
  assert.equal(highlighted.length, expected.length, `${what}: ${highlighted} vs ${expected.map((e) => e.position)}`);
  highlighted.forEach((pos, rank) => {
    const diff = Math.abs(weightOf(pos) - expected[rank].weight);
    assert.ok(
      pos === expected[rank].position || diff <= tolerance,
      `${what}: rank ${rank} is ${pos} (w=${weightOf(pos)}), expected ${expected[rank].position} (w=${expected[rank].weight})`,
    );
  });
}

async function clickGridCell(page, layer, head) {
  const center = await page.evaluate(([l, h]) => window.attnscopeViewer.grid.cellCenter(l, h), [layer, head]);
  await page.locator(".as-grid-canvas").scrollIntoViewIfNeeded();
  const box = await page.locator(".as-grid-canvas").boundingBox();
  await page.mouse.click(box.x + center.x, box.y + center.y);
  await page.waitForSelector(`.as-heatmap[data-ready="${layer}:${head}"]`, { timeout: 60000 });
}

async function heatmapReadout(page, query, key) {
  const center = await page.evaluate(([q, k]) => window.attnscopeViewer.heatmap.cellCenter(q, k), [query, key]);
  await page.locator(".as-heatmap-canvas").scrollIntoViewIfNeeded();
  const box = await page.locator(".as-heatmap-canvas").boundingBox();
  await page.mouse.move(box.x + center.x, box.y + center.y);
  return page.evaluate(() => ({ ...document.querySelector(".as-readout").dataset }));
}

test("hover, grid click and heatmap on a page written by attnscope view", async () => {
  const html = join(work, "view.html");
  const report = join(work, "report.json");
  execFileSync("sh", ["-c", `"${cli}" analyze --from "${capturePath}" --json > "${report}"`]);
  run("view", capturePath, "--report", report, "--out", html);
  const { page, errors } = await openPage(`file://${html}`);

  // Prompt/generated boundary and terms.
  assert.equal(await page.locator(".as-boundary").count(), 1);
  assert.equal(await page.locator(".as-tok.as-prompt").count(), capture.promptLength);
  assert.equal(await page.locator(".as-tok.as-generated").count(), capture.T - capture.promptLength);
  assert.ok((await page.locator(".as-tok.as-term").count()) > 0, "financial terms are marked");

  // Starts on layer 0 head 0: the strip's top keys for a generated and a prompt query.
  const first = { layer: capture.layers[0], head: capture.heads[0] };
  for (const query of [capture.T - 2, capture.promptLength - 5]) {
    const highlighted = await hoverToken(page, query);
    const expected = topKeys(capture, first.layer, first.head, query, TOP);
    assertTop(highlighted, expected, (p) => capture.weight(first.layer, first.head, query, p), 0, `L0H0 q${query}`);
  }

  // Click another grid cell: the heatmap switches (title, pixels, readout values).
  const before = await page.evaluate(() => document.querySelector(".as-heatmap-canvas").toDataURL());
  const target = { layer: capture.layers[2], head: capture.heads[5] };
  await clickGridCell(page, target.layer, target.head);
  const title = await page.locator(".as-heatmap-title").textContent();
  assert.equal(title, `Layer ${target.layer} \u00b7 head ${target.head}`);
  const afterClick = await page.evaluate(() => document.querySelector(".as-heatmap-canvas").toDataURL());
  assert.notEqual(afterClick, before, "the heatmap's pixels changed");
  for (const [q, k] of [[capture.T - 1, 3], [40, 39], [10, 0]]) {
    const readout = await heatmapReadout(page, q, k);
    assert.equal(Number(readout.query), q);
    assert.equal(Number(readout.key), k);
    assert.equal(Number(readout.weight), capture.weight(target.layer, target.head, q, k), `readout A[${q},${k}]`);
  }

  // The strip follows the selected head; then the reverse view; then the layer mean.
  const q = capture.T - 3;
  assertTop(await hoverToken(page, q), topKeys(capture, target.layer, target.head, q, TOP),
    (p) => capture.weight(target.layer, target.head, q, p), 0, "selected head");
  await page.selectOption(".as-controls label:nth-child(4) select", "queries");
  const key = 5;
  assertTop(await hoverToken(page, key), topKeys(capture, target.layer, target.head, key, TOP, true),
    (p) => capture.weight(target.layer, target.head, p, key), 0, "reverse");
  await page.selectOption(".as-controls label:nth-child(4) select", "keys");
  await page.selectOption(".as-controls label:nth-child(3) select", "mean");
  assertTop(await hoverToken(page, q), topKeys(capture, target.layer, "mean", q, TOP),
    (p) => capture.weight(target.layer, "mean", q, p), 1e-6, "layer mean");

  // The report's maps and the grid overlay.
  assert.ok((await page.locator(".as-map").count()) >= 8, "one map per report metric");
  await page.selectOption(".as-controls label:nth-child(5) select", { label: "type" });
  await page.screenshot({ path: join(artifacts, "viewer.png"), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});

test("a byte budget embeds some heads, says so, and --heads picks them", async () => {
  const html = join(work, "budget.html");
  const oneHead = Math.ceil(((capture.T * (capture.T + 1)) / 2) * 4 / 3) * 4;
  run("view", capturePath, "--max-bytes", String(3 * oneHead), "--out", html);
  const { page, errors } = await openPage(`file://${html}`);
  const banner = await page.locator(".as-banner").textContent();
  assert.match(banner, /full matrix of 2 of 32 heads/);
  await clickGridCell(page, capture.layers[3], capture.heads[7]);
  assert.match(await page.locator(".as-heatmap-notice").textContent(), /not in the page/);
  await page.hover(`.as-tok[data-pos="3"]`);
  assert.match(await page.locator(".as-strip-info").textContent(), /not in this page/);
  assert.deepEqual(errors, []);
  await page.close();

  const picked = join(work, "picked.html");
  run("view", capturePath, "--heads", "3:7", "--out", picked);
  const second = await openPage(`file://${picked}`);
  await clickGridCell(second.page, 3, 7);
  const query = capture.T - 1;
  assertTop(await hoverToken(second.page, query), topKeys(capture, 3, 7, query, TOP),
    (p) => capture.weight(3, 7, query, p), 0, "--heads 3:7");
  await second.page.close();

  assert.throws(() => execFileSync(cli, ["view", capturePath, "--heads", "9:0", "--out", picked], { stdio: "pipe" }),
    (error) => /layer 9 is not in the capture/.test(error.stderr.toString()));
  assert.throws(() => execFileSync(cli, ["view", capturePath, "--heads", "0:0", "--max-bytes", "10", "--out", picked], { stdio: "pipe" }),
    (error) => /over --max-bytes 10/.test(error.stderr.toString()));
});

test("view --serve fetches any head on demand", async () => {
  const server = spawn(cli, ["view", capturePath, "--serve", "--port", "0"], { stdio: ["ignore", "pipe", "pipe"] });
  const exited = new Promise((resolveExit) => server.on("exit", (code, signal) => resolveExit({ code, signal })));
  try {
    const url = await new Promise((resolveUrl, reject) => {
      let out = "";
      server.stdout.on("data", (chunk) => {
        out += chunk;
        const match = out.match(/serving (http:\/\/127\.0\.0\.1:\d+\/)/);
        if (match) resolveUrl(match[1]);
      });
      server.on("exit", (code) => reject(new Error(`server exited ${code} before listening`)));
    });
    const { page, errors } = await openPage(url);
    assert.match(await page.locator(".as-banner").textContent(), /fetched on demand/);
    await clickGridCell(page, 3, 6);
    const query = capture.T - 4;
    assertTop(await hoverToken(page, query), topKeys(capture, 3, 6, query, TOP),
      (p) => capture.weight(3, 6, query, p), 0, "served head");
    const missing = await page.evaluate(async (base) => {
      const r = await fetch(`${base}api/head?layer=99&head=0`);
      return { status: r.status, text: await r.text() };
    }, url);
    assert.equal(missing.status, 404);
    assert.match(missing.text, /layer 99 was not captured/);
    // Another Host (a rebinding page elsewhere) is refused.
    const port = new URL(url).port;
    const foreign = await new Promise((resolveReply, reject) => {
      const socket = connect(Number(port), "127.0.0.1", () =>
        socket.write(`GET /api/head?layer=0&head=0 HTTP/1.1\r\nHost: attacker.example:${port}\r\n\r\n`));
      let reply = "";
      socket.on("data", (chunk) => (reply += chunk));
      socket.on("end", () => resolveReply(reply));
      socket.on("error", reject);
    });
    assert.match(foreign, /^HTTP\/1\.1 403 /);
    assert.deepEqual(errors, []);
    await page.close();
  } finally {
    server.kill("SIGTERM");
  }
  assert.deepEqual(await exited, { code: 0, signal: null });
});

test("Capture.show() fragments from the Python client render inline, two to a page", async () => {
  const page_path = join(work, "notebook.html");
  const script = [
    "import sys; from attnscope import Capture",
    "c = Capture.load(sys.argv[1])",
    "body = c._repr_html_() + c.show(heads=[(1, 2)])._repr_html_()",
    "open(sys.argv[2], 'w', encoding='utf-8').write('<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body>' + body + '</body></html>')",
  ].join("\n");
  execFileSync("/usr/bin/python3", ["-c", script, capturePath, page_path], {
    env: { ...process.env, PYTHONPATH: resolve("../python"), ATTNSCOPE_BUILD_DIR: buildDir },
  });
  const page = await browser.context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(`file://${page_path}`);
  await page.waitForFunction(() => document.querySelectorAll(".attnscope[data-rendered=true]").length === 2,
    null, { timeout: 60000 });
  const second = page.locator(".attnscope").nth(1);
  assert.equal(await second.locator(".as-heatmap-title").textContent(), "Layer 1 \u00b7 head 2");
  const query = capture.T - 2;
  await second.locator(`.as-tok[data-pos="${query}"]`).hover();
  const highlighted = await second.evaluate((root) =>
    [...root.querySelectorAll(".as-tok.as-hit")].sort((a, b) => a.dataset.rank - b.dataset.rank).map((s) => Number(s.dataset.pos)));
  assertTop(highlighted, topKeys(capture, 1, 2, query, TOP), (p) => capture.weight(1, 2, query, p), 0, "notebook L1H2");
  // The first viewer's strip is untouched by the second's hover.
  assert.equal(await page.locator(".attnscope").nth(0).locator(".as-tok.as-hit").count(), 0);
  assert.deepEqual(errors, []);
  await page.close();
});
