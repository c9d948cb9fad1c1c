// The console's flows in headless Chromium (playwright-core driving
// Debian's chromium), with axe-core on every page and a 200% zoom check.
//
//   node tests/browser/console.mjs BASE REVIEW_ID LICENSE_ID US_LICENSE_ID SCREENSHOT_DIR
//
// BASE's console signs people in at the test OpenID provider (run.sh starts
// both): `rita` is a reseller, `ada` a compliance officer, `root` an admin.
//
// Exits non-zero, saying which step failed, on the first failure.
import { chromium } from "playwright-core";
import { createRequire } from "node:module";
import path from "node:path";

const [base, reviewId, licenseId, usLicenseId, shots] = process.argv.slice(2);
const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");
const failures = [];

function check(ok, what) {
  if (!ok) {
    failures.push(what);
    console.error(`FAIL: ${what}`);
  } else {
    console.log(`ok: ${what}`);
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
// axe is injected as a script: the console's CSP forbids every script, so
// this context (and only it) bypasses the CSP; the pages themselves carry
// no script at all.
const context = await browser.newContext({ bypassCSP: true, viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
const scriptsRun = [];
page.on("request", (r) => { if (r.resourceType() === "script") scriptsRun.push(r.url()); });

// Every page: a screenshot, no serious or critical axe violation, and at
// 200% zoom (half the width) no horizontal scrolling.
async function review(name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  await page.addScriptTag({ path: axePath });
  const result = await page.evaluate(async () => await window.axe.run(document));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(bad.length === 0, `${name}: no serious or critical axe violations ${JSON.stringify(bad.map((v) => [v.id, v.nodes.map((n) => n.target)]))}`);
  await page.setViewportSize({ width: 640, height: 900 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `${name}: readable at 200% zoom without horizontal scrolling (${overflow}px over)`);
  await page.setViewportSize({ width: 1280, height: 900 });
}

try {
  // Signed out: the console sends us to its sign-in.
  await page.goto(`${base}/console/`);
  check(page.url().endsWith("/console/sign-in"), "signed out, the console opens its sign-in page");
  await review("sign-in");

  // At the provider: its sign-in page, then back.
  async function atProvider(account) {
    await page.waitForSelector("#login");
    check(!page.url().startsWith(base), `${account}: the sign-in happens at the provider`);
    await page.fill("#login", account);
    await page.click("button[type=submit]");
  }

  // A reseller signs in at the provider and is refused by the console.
  await page.click("a:has-text('Sign in with your identity provider')");
  await atProvider("rita");
  await page.waitForURL(`${base}/console/callback**`);
  check((await page.textContent("main")).includes("resellers and integrators use the API"), "a reseller's sign-in is refused");
  await review("sign-in-refused");
  await context.clearCookies(); // the provider's session too

  // A compliance officer, with the keyboard alone: skip link, the sign-in
  // link, then the provider's form.
  await page.goto(`${base}/console/sign-in`);
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement.className === "skip"), "the first Tab reaches the skip link");
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement.textContent.includes("identity provider")), "the next Tab reaches the sign-in link");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#login");
  await page.focus("#login");
  await page.keyboard.type("ada");
  await page.keyboard.press("Enter");
  await page.waitForURL(`${base}/console/reviews`);
  check((await page.textContent("header")).includes("Ada Reviewer"), "signed in as the provider's person");
  check(await page.isVisible(`a[href="/console/reviews/${reviewId}"]`), "the review queue lists the open case");
  await review("review-queue");

  // The case and its evidence.
  await page.click(`a[href="/console/reviews/${reviewId}"]`);
  const evidence = await page.textContent("main");
  for (const seen of ["ACME-FW-K", "KAV-ENGINE", "ao-kaspersky-lab", "us-icts-kaspersky-2024", "nexus_unknown", "Exemplo Ltda", "alpha"]) {
    check(evidence.includes(seen), `the case shows ${seen}`);
  }
  check((await page.locator("ol.path li").count()) >= 3, "the lineage path is drawn as steps");
  await review("review-evidence");

  // Approve with attested facts and a note.
  await page.check("#approve");
  await page.selectOption("#us_person", "false");
  await page.fill("#note", "Customer confirmed not a U.S. person (call of 2 Dec)");
  await page.click("button:has-text('Resolve')");
  await page.waitForURL(`${base}/console/reviews/${reviewId}`);
  const resolved = await page.textContent("main");
  check(resolved.includes("approved") && resolved.includes("ada"), "the case shows its approval, by the person signed in");
  await review("review-approved");

  // The licence it issued is in the licences; suspend one and reinstate it.
  await page.click("nav a[href='/console/licenses']");
  const rows = await page.locator("tbody tr").count();
  check(rows === 3, `the licences list all three licences, the approved one included (${rows})`);
  check((await page.textContent("main")).includes("Exemplo Ltda"), "the licence the approval issued is listed");
  await review("licences");
  await page.fill("#reseller", "alpha");
  await page.selectOption("#status", "active");
  await page.click("button:has-text('Search')");
  check((await page.locator("tbody tr").count()) === 3, "the search by reseller and status finds them");

  // An impact preview: acme made a subsidiary of Kaspersky would end the
  // U.S. customer's licence, and only it.
  await page.click("nav a[href='/console/impact']");
  check((await page.textContent("main")).includes("No impact runs yet"), "no impact run yet");
  await review("impact-runs");
  await page.click("a:has-text('Preview a change')");
  await page.fill("#changes", JSON.stringify([{ op: "put", path: "/v1/organizations/acme/relationships/ao-kaspersky-lab", body: { kind: "subsidiary_of" } }], null, 2));
  await page.click("button:has-text('Preview')");
  const foretold = await page.textContent("section[aria-labelledby=result]");
  check(foretold.includes(usLicenseId) && !foretold.includes(licenseId), "the preview names the U.S. licence it would end, and not the others");
  await review("impact-preview");
  await page.click("nav a[href='/console/licenses']");
  await page.click(`a[href="/console/licenses/${licenseId}"]`);
  await page.fill("#suspend-reason", "Payment dispute under investigation");
  await page.click("button:has-text('Suspend the licence')");
  await page.waitForURL(`${base}/console/licenses/${licenseId}`);
  const suspended = await page.textContent("main");
  check(suspended.includes("suspended") && suspended.includes("Payment dispute"), "the licence is suspended, with its reason");
  await review("licence-suspended");
  await page.click("button:has-text('Reinstate the licence')");
  await page.waitForURL(`${base}/console/licenses/${licenseId}`);
  const reinstated = await page.textContent("main");
  check(reinstated.includes("active"), "the licence is active again");
  const history = await page.textContent("section[aria-labelledby=history]");
  check(history.includes("license.suspend") && history.includes("decision.reinstate"), "its history shows the suspension and the reinstatement");
  await review("licence-reinstated");

  // The audit trail: filtered, verified, exported.
  await page.click("nav a[href='/console/audit']");
  await review("audit-trail");
  await page.fill("#action", "review.*");
  await page.click("button:has-text('Filter')");
  const filtered = await page.locator("tbody tr").count();
  check(filtered === 1, `the trail filtered on review.* shows the one approval (${filtered})`);
  await page.click("a:has-text('Verify the whole chain now')");
  check((await page.textContent("main")).includes("The chain verifies"), "the chain verifies");
  await review("audit-verification");
  await page.click("nav a[href='/console/audit']");
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.click("a:has-text('NDJSON')"),
  ]);
  await download.saveAs(path.join(shots, "audit.ndjson"));
  check(download.suggestedFilename() === "audit.ndjson", "the export downloads as audit.ndjson");

  // The catalogue, read-only for compliance.
  await page.click("nav a[href='/console/catalogue']");
  check((await page.textContent("main")).includes("Read-only"), "the catalogue is read-only for compliance");

  // Sign out: the console is closed again.
  await page.click("button:has-text('Sign out')");
  await page.goto(`${base}/console/reviews`);
  check(page.url().endsWith("/console/sign-in"), "signed out, the queue is out of reach");

  // An admin edits the catalogue: a bad value is refused on its field.
  await context.clearCookies();
  await page.click("a:has-text('Sign in with your identity provider')");
  await atProvider("root");
  await page.waitForURL(`${base}/console/catalogue`);
  await review("catalogue");
  await page.click("a[href='/console/catalogue/organizations/acme']");
  await page.fill("#name", "Acme Networks GmbH");
  await page.fill("#country", "Germany");
  await page.click("button:has-text('Save')");
  check(await page.isVisible("#country-error"), "a bad country is refused on its field");
  check((await page.getAttribute("#country", "aria-describedby")) === "country-error", "the field names its error");
  await review("catalogue-refused");
  await page.fill("#country", "DE");
  await page.click("button:has-text('Save')");
  await page.waitForURL(`${base}/console/catalogue/organizations/acme`);
  check((await page.inputValue("#name")) === "Acme Networks GmbH", "the admin's change is saved");
  await page.click("button:has-text('Sign out')");
  check(scriptsRun.length === 0, `no page loaded a script (${scriptsRun})`);
} catch (e) {
  failures.push(String(e));
  console.error(e);
}
await browser.close();
if (failures.length > 0) {
  console.error(`${failures.length} check(s) failed`);
  process.exit(1);
}
console.log("all console flows passed");
