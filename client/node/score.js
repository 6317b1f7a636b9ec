#!/usr/bin/env node
// attnscope from Node.js: ScoreAnswers with nothing but the .proto file. Scores candidate
// answers after the input, optionally with heads ablated, or sweeps every head (single-head
// ablation) and prints the heads whose ablation moves the logit difference most.
//
//   node score.js --server 127.0.0.1:50051 --text "Revenue rose. Will earnings" \
//       --candidates " increase"," decrease" [--ablate 1:0,2:mean] [--json]
//   node score.js --server ADDR --ids 1,2,3 --candidate-ids "5;7" --sweep [--mode mean] [--json]
'use strict';

const grpc = require('@grpc/grpc-js');
const {loadService, enumValues, numberList, walkFlags, refusal, errorLine} = require('./common.js');

function parseArgs(argv) {
  const AblationMode = enumValues('AblationMode');
  const ablationMode = (name) => {
    const mode = {zero: AblationMode.ABLATION_ZERO, mean: AblationMode.ABLATION_MEAN}[name || 'zero'];
    if (mode === undefined) throw new Error(`ablation mode ${JSON.stringify(name)} is not zero or mean`);
    return mode;
  };
  const args = {server: '127.0.0.1:50051', ablate: [], sweep: false, mode: AblationMode.ABLATION_ZERO, json: false};
  walkFlags(argv, (flag, value) => {
    if (flag === '--server') args.server = value();
    else if (flag === '--text') args.text = value();
    else if (flag === '--ids') args.ids = numberList(value());
    else if (flag === '--candidates') args.candidates = value().split(',').map((text) => ({text}));
    else if (flag === '--candidate-ids') args.candidates = value().split(';').map((g) => ({ids: {ids: numberList(g)}}));
    else if (flag === '--ablate') {
      const [layer, heads, mode] = value().split(':');
      args.ablate.push({ablate: {layer: Number(layer), heads: numberList(heads || ''), mode: ablationMode(mode)}});
    } else if (flag === '--sweep') args.sweep = true;
    else if (flag === '--mode') args.mode = ablationMode(value());
    else if (flag === '--token') args.token = value();
    else if (flag === '--json') args.json = true;
    else return false;
    return true;
  });
  if ((args.text === undefined) === (args.ids === undefined)) throw new Error('give exactly one of --text, --ids');
  if (!args.candidates) throw new Error('give --candidates or --candidate-ids');
  return args;
}

function score(args) {
  const Service = loadService();
  const client = new Service(args.server, grpc.credentials.createInsecure());
  const request = {candidates: args.candidates, interventions: {items: args.ablate}};
  if (args.text !== undefined) request.text = args.text;
  else request.ids = {ids: args.ids};
  if (args.sweep) request.sweep = {layers: [], heads: [], mode: args.mode};
  const metadata = new grpc.Metadata();
  if (args.token) metadata.set('authorization', `Bearer ${args.token}`);
  return new Promise((resolve, reject) => {
    let result = null;
    const call = client.ScoreAnswers(request, metadata);
    call.on('data', (message) => {
      if (message.progress && !args.json) process.stderr.write(`sweep ${message.progress.done}/${message.progress.total}\r`);
      if (message.result) result = message.result;
    });
    call.on('error', (error) => { client.close(); reject(refusal(error)); });
    call.on('end', () => {
      client.close();
      if (result === null) reject(new Error('ScoreAnswers ended without a result'));
      else resolve(result);
    });
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const result = await score(args);
  const candidates = result.candidates.map((c) => ({
    text: c.text, token_ids: c.token_ids, token_logprobs: c.token_logprobs, logprob: c.logprob,
    first_token_rank: c.first_token_rank,
  }));
  if (args.sweep) {
    const heads = result.sweep_heads.map((h) => ({layer: h.layer, head: h.head, logit_diff: h.logit_diff, delta: h.delta}));
    if (args.json) {
      console.log(JSON.stringify({clean_logit_diff: result.logit_diff, heads}));
    } else {
      console.log(`clean logit_diff ${result.logit_diff.toFixed(4)}; heads moving it most:`);
      for (const h of [...heads].sort((a, b) => Math.abs(b.delta) - Math.abs(a.delta)).slice(0, 10)) {
        console.log(`  L${h.layer}H${h.head}  delta ${h.delta >= 0 ? '+' : ''}${h.delta.toFixed(4)}`);
      }
    }
    return;
  }
  if (args.json) {
    console.log(JSON.stringify({candidates, logit_diff: result.has_logit_diff ? result.logit_diff : null}));
    return;
  }
  for (const c of candidates) console.log(`${JSON.stringify(c.text)}  logprob ${c.logprob.toFixed(4)}  rank ${c.first_token_rank}`);
  if (result.has_logit_diff) console.log(`logit_diff ${result.logit_diff.toFixed(4)}`);
}

main().catch((error) => {
  console.error(errorLine('score.js', error));
  process.exit(1);
});
