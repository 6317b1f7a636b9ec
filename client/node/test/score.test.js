// Runs score.js against a real attnscope-server on loopback serving the golden qwen2-tiny
// checkpoint and checks its numbers against the independent PyTorch reference
// (tests/engine/testdata/interventions_qwen2-tiny.json). Skips (with the reason) when the
// server binary or the golden data is absent.
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const net = require('net');
const path = require('path');
const {spawn, execFile} = require('child_process');

const REPO = path.join(__dirname, '..', '..', '..');
const BUILD = process.env.ATTNSCOPE_BUILD_DIR || path.join(REPO, 'build');
const SERVER = path.join(BUILD, 'server', 'service', 'attnscope-server');
const GOLDEN = path.join(REPO, 'tests', 'data', 'golden', 'qwen2-tiny');
const REFERENCE = path.join(REPO, 'tests', 'engine', 'testdata', 'interventions_qwen2-tiny.json');

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const {port} = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

function run(args) {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(__dirname, '..', 'score.js'), ...args], {timeout: 120000},
        (error, stdout, stderr) => resolve({code: error ? error.code || 1 : 0, stdout, stderr}));
  });
}

async function startServer(t) {
  const address = `127.0.0.1:${await freePort()}`;
  const args = ['--model', path.join(GOLDEN, 'model'), '--listen', address];
  const config = path.join(REPO, 'config', 'server.yaml');
  if (fs.existsSync(config)) args.unshift('--config', config);
  const child = spawn(SERVER, args, {stdio: ['ignore', 'ignore', 'pipe']});
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  t.after(() => child.kill('SIGTERM'));
  for (let attempt = 0; attempt < 240; attempt++) {
    if (child.exitCode !== null) throw new Error(`server exited ${child.exitCode}: ${log}`);
    const probe = await run(['--server', address, '--ids', '1', '--candidate-ids', '2', '--json']);
    if (probe.code === 0) return address;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`server at ${address} never became ready: ${log}`);
}

const missing = !fs.existsSync(SERVER) ? `no server binary at ${SERVER} (set ATTNSCOPE_BUILD_DIR)`
  : !fs.existsSync(path.join(GOLDEN, 'model', 'config.json')) ? `no golden model at ${GOLDEN}` : null;

test('score.js gives the reference numbers under mean ablation and in a sweep', {skip: missing || false}, async (t) => {
  const reference = JSON.parse(fs.readFileSync(REFERENCE, 'utf8'));
  const address = await startServer(t);
  const ids = reference.prompt.join(',');
  const candidates = reference.candidates.map((c) => c.join(',')).join(';');
  const mean = reference.cases.find((c) => c.name === 'mean_ablation');
  const result = await run(['--server', address, '--ids', ids, '--candidate-ids', candidates,
    '--ablate', '0:1:mean', '--ablate', '1:2,3:mean', '--json']);
  assert.strictEqual(result.code, 0, result.stderr);
  const score = JSON.parse(result.stdout);
  score.candidates.forEach((c, k) => {
    c.token_logprobs.forEach((lp, j) => assert.ok(Math.abs(lp - mean.scores[k].token_logprobs[j]) < 1e-4));
    assert.strictEqual(c.first_token_rank, mean.scores[k].first_token_rank);
  });
  assert.ok(Math.abs(score.logit_diff - (mean.scores[0].logprob - mean.scores[1].logprob)) < 1e-4);

  const sweep = await run(['--server', address, '--ids', ids, '--candidate-ids', candidates, '--sweep', '--json']);
  assert.strictEqual(sweep.code, 0, sweep.stderr);
  const table = JSON.parse(sweep.stdout);
  assert.strictEqual(table.heads.length, 8);
  table.heads.forEach((h, i) => {
    assert.ok(Math.abs(h.logit_diff - reference.sweep.zero[i].logit_diff) < 1e-4, `cell ${i}`);
  });

  const bad = await run(['--server', address, '--ids', ids, '--candidate-ids', '1', '--ablate', '0:9']);
  assert.strictEqual(bad.code, 1);
  assert.match(bad.stderr, /interventions\[0\]\.heads: index 9 is out of range/);
});
