// Runs score.js against a real attnscope-server on loopback serving the golden qwen2-tiny
// checkpoint and checks its numbers against the independent PyTorch reference
// (tests/engine/testdata/interventions_qwen2-tiny.json). Skips (with the reason) when the
// server binary or the golden data is absent.
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const path = require('path');
const {REPO, runScript, startServer: startLoopbackServer, missing} = require('../testing/loopback.js');

const REFERENCE = path.join(REPO, 'tests', 'engine', 'testdata', 'interventions_qwen2-tiny.json');

const run = (args) => runScript('score.js', args, 120000);

// Ready when a score of one candidate succeeds.
const startServer = (t) => startLoopbackServer(t, async (address) =>
  (await run(['--server', address, '--ids', '1', '--candidate-ids', '2', '--json'])).code === 0, 240);

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
  // The refused field, decoded from the status details, ends the error line.
  assert.match(bad.stderr, / \[field: interventions\.items\[0\]\.ablate\.heads\[0\]\]$/m);
});
