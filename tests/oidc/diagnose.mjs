// What a test provider that is not ready says about itself, printed on stdout:
//
//   node tests/oidc/diagnose.mjs PID REPORT_DIR
//
// PID must have been started with `node --report-on-signal
// --report-directory=REPORT_DIR`. Prints its state from `ps` (CPU time, wait
// channel), then asks it for a Node.js diagnostic report (SIGUSR2), waits up
// to 3 s for it and prints where its JavaScript stands, the CPU it has used
// and its open handles. No report within 3 s means the process is stuck in
// synchronous code or not scheduled: the report waits for its event loop.
// Used by tests/api/oidc_provider.rs and tests/browser/run.sh; always exits 0.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const [pidText, dir] = process.argv.slice(2);
const pid = Number.parseInt(pidText ?? '', 10);
if (!Number.isSafeInteger(pid) || !dir) {
  console.log('usage: node tests/oidc/diagnose.mjs PID REPORT_DIR');
  process.exit(0);
}

try {
  console.log(execFileSync('ps', ['-o', 'pid,stat,etime,time,wchan:32,args', '-p', String(pid)], { encoding: 'utf8' }).trimEnd());
} catch (err) {
  console.log(`ps: ${err.message}`);
}
fs.mkdirSync(dir, { recursive: true });
try {
  process.kill(pid, 'SIGUSR2');
} catch (err) {
  console.log(`SIGUSR2: ${err.message}`);
  process.exit(0);
}

// The report is written in pieces: taken once it parses.
function report() {
  for (const name of fs.readdirSync(dir).filter((n) => n.endsWith('.json'))) {
    try {
      return JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8'));
    } catch {
      // not complete yet
    }
  }
  return undefined;
}

const deadline = Date.now() + 3000;
let found;
while (!(found = report()) && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 100));
}
if (!found) {
  console.log('no Node.js report within 3 s of SIGUSR2 (stuck in synchronous code, or not scheduled)');
  process.exit(0);
}
const usage = found.resourceUsage ?? {};
const stack = found.javascriptStack ?? {};
console.log(`Node.js report: cpu user ${usage.userCpuSeconds} s, kernel ${usage.kernelCpuSeconds} s; javascript: ${stack.message}`);
for (const frame of (stack.stack ?? []).slice(0, 25)) console.log(`    ${frame}`);
console.log(`  libuv handles: ${(found.libuv ?? []).map((h) => h.type).join(', ') || 'none'}`);
