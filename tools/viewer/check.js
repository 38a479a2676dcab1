// Checks a csm viewer page in a real headless Chromium (Debian's chromium,
// driven by playwright-core): it loads without console errors, draws one
// arrow per delivery of the trace, shows a message's body on a click and,
// for a run with an agreement violation, jumps to it.
//
//   node tools/viewer/check.js PAGE.html TRACE.jsonl [--violation] [--screenshot FILE.png]
//
// Prints what it checked; exits 1 naming the first check that failed.
"use strict";
const fs = require("fs");
const path = require("path");
const { chromium } = require(process.env.CSM_PLAYWRIGHT || "playwright-core");

function fail(what) { console.error("viewer check FAILED: " + what); process.exit(1); }

async function main() {
  const args = process.argv.slice(2);
  const page_path = args[0], trace_path = args[1];
  if (!page_path || !trace_path) fail("usage: check.js PAGE.html TRACE.jsonl [--violation] [--screenshot FILE]");
  if (!/\.html?$/.test(page_path)) fail(`${page_path}: a page's name must end in .html (a browser takes it for text)`);
  const violation = args.includes("--violation");
  const shot = args.includes("--screenshot") ? args[args.indexOf("--screenshot") + 1] : null;
  let deliveries = 0, ids = new Set();
  for (const line of fs.readFileSync(trace_path, "utf8").split("\n")) {
    if (line.includes('"kind":"deliver"')) {
      const id = JSON.parse(line).id;
      if (!ids.has(id)) { ids.add(id); deliveries++; }
    }
  }
  const env = Object.assign({}, process.env);
  delete env.LD_PRELOAD; // a sanitizer runtime preloaded for csm's tests keeps Chromium from starting
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"], env, timeout: 60000 });
  const page = await browser.newPage({ viewport: { width: 1400, height: 800 } });
  const errors = [];
  page.on("console", m => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", e => errors.push(String(e)));
  page.on("request", r => { if (!r.url().startsWith("file:")) errors.push("network request: " + r.url()); });
  await page.goto("file://" + path.resolve(page_path));
  await page.waitForFunction(() => window.csmView !== undefined);
  if (errors.length) fail("console errors on load: " + errors.join("; "));
  console.log("loaded without console errors");
  const drawn = await page.evaluate(() => window.csmView.whole());
  const budget = await page.evaluate(() => window.csmView.budget);
  if (deliveries + 0 <= budget) {
    if (drawn !== deliveries) fail(`the page drew ${drawn} delivery arrows, the trace has ${deliveries} deliveries`);
    console.log(`drew ${drawn} arrows for ${deliveries} deliveries`);
  } else {
    // a large run: the page draws its budget and asks to zoom in
    const where = await page.evaluate(() => document.getElementById("where").textContent);
    if (!/zoom in for the rest/.test(where)) fail(`a run of ${deliveries} deliveries drew ${drawn} with no hint`);
    console.log(`${deliveries} deliveries: the whole run draws ${drawn} arrows and asks to zoom in`);
  }
  const ms = await page.evaluate(() => window.csmView.redraw());
  console.log(`a redraw took ${ms.toFixed(0)} ms`);
  // a click on a delivered message shows its body
  const id = [...ids][Math.floor(ids.size / 2)];
  await page.evaluate(() => window.csmView.zoom(1));
  const p = await page.evaluate(i => window.csmView.point(i), id);
  await page.mouse.click(p.x, p.y);
  const body = await page.evaluate(() => { const b = document.getElementById("body"); return b && b.textContent; });
  if (!body || !body.includes('"kind"')) fail(`a click on message ${id} showed no body (got ${body})`);
  const info = await page.evaluate(() => document.getElementById("info").textContent);
  if (!/happened before it/.test(info)) fail("the click did not show what happened before the message");
  const shown = (info.match(/^message (\d+)/) || [])[1];
  if (!shown) fail("the click selected no message: " + info.slice(0, 100));
  // arrows of one sender, receiver and instant lie on each other: the click takes the nearest
  console.log(`a click on message ${id} (${p.kind}) selected message ${shown}, body ${body.replace(/\s+/g, " ").slice(0, 80)}`);
  if (violation) {
    await page.click("#jump");
    const text = await page.evaluate(() => document.getElementById("info").textContent);
    if (!/agreement violated at rank/.test(text)) fail("the jump showed no violation: " + text);
    console.log("jumped to the violation: " + text.slice(0, 100));
  }
  if (shot) { await page.screenshot({ path: shot }); console.log("screenshot: " + shot); }
  if (errors.length) fail("console errors: " + errors.join("; "));
  await browser.close();
}
main().catch(e => fail(String(e && e.stack || e)));
