// Screenshot of a viewer page (docs/viewer.png comes from the demo's view.html this way):
//   node client/viewer/test/screenshot.mjs out/demo/view.html docs/viewer.png [HOVER_POSITION [L:H]]
import { resolve } from "node:path";
import { launch } from "./browser.mjs";

const [html, png, hover, pick] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.context.newPage();
  await page.goto(`file://${resolve(html)}`);
  await page.waitForSelector("#attnscope[data-rendered=true]", { timeout: 120000 });
  const grid = await page.evaluate(() => window.attnscopeViewer.data.layers.length);
  // The second head whose matrix the page has, the type overlay when there is a report, one
  // token hovered.
  await page.evaluate(async (chosen) => {
    const v = window.attnscopeViewer;
    const heads = v.data.layers.flatMap((l) => v.data.heads.map((h) => [l, h])).filter(([l, h]) => v.data.available(l, h));
    const [layer, head] = chosen ? chosen.split(":").map(Number) : heads[Math.min(1, heads.length - 1)];
    await v.select(layer, head);
  }, pick || null);
  await page.selectOption(".as-controls label:nth-child(5) select", { index: 1 }).catch(() => {});
  const position = hover !== undefined ? Number(hover) : await page.evaluate(() => window.attnscopeViewer.data.size - 3);
  await page.hover(`.as-tok[data-pos="${position}"]`);
  await page.evaluate(() => window.scrollTo(0, 0));
  const height = await page.evaluate(() => document.querySelector(".as-maps")?.getBoundingClientRect().top ?? 1000);
  await page.screenshot({ path: png, fullPage: true, clip: { x: 0, y: 0, width: 1360, height: Math.min(1400, Math.ceil(height + 140)) } });
  console.log(`wrote ${png} (${grid} layers)`);
} finally {
  await browser.close();
}
