// Runs capture.js against a real attnscope-server on loopback serving the golden qwen2-tiny
// checkpoint, and checks the printed shapes and ids against the golden reference dumps.
// Skips (with the reason) when the server binary is not built.
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const {GOLDEN, runScript, startServer: startLoopbackServer, missing} = require('../testing/loopback.js');

// Reads a little-endian .npy file (format 1.0/2.0) of int64 or float32.
function readNpy(file) {
  const buffer = fs.readFileSync(file);
  const major = buffer[6];
  const headerLength = major === 1 ? buffer.readUInt16LE(8) : buffer.readUInt32LE(8);
  const offset = (major === 1 ? 10 : 12) + headerLength;
  const header = buffer.toString('latin1', major === 1 ? 10 : 12, offset);
  const data = buffer.subarray(offset);
  const copy = new Uint8Array(data).buffer;
  if (header.includes("'<i8'")) return Array.from(new BigInt64Array(copy), Number);
  if (header.includes("'<f4'")) return new Float32Array(copy);
  throw new Error(`${file}: unsupported dtype in ${header}`);
}

const run = (args) => runScript('capture.js', args, 60000);

// Ready when a capture of one id succeeds.
const startServer = (t) => startLoopbackServer(t, async (address) =>
  (await run(['--server', address, '--ids', '1', '--max-new-tokens', '0', '--json'])).code === 0, 120);

test('capture.js prints the shapes of the golden capture', {skip: missing || false}, async (t) => {
  const address = await startServer(t);
  const promptIds = readNpy(path.join(GOLDEN, 'prompt_ids.npy'));
  const genIds = readNpy(path.join(GOLDEN, 'gen_ids.npy'));
  const result = await run(['--server', address, '--ids', promptIds.join(','), '--max-new-tokens',
    String(genIds.length), '--json']);
  assert.strictEqual(result.code, 0, result.stderr);
  const summary = JSON.parse(result.stdout);
  const T = promptIds.length + genIds.length;
  assert.deepStrictEqual(summary.token_ids, promptIds.concat(genIds));
  assert.strictEqual(summary.prompt_length, promptIds.length);
  assert.deepStrictEqual(summary.heads, [0, 1, 2, 3]);
  assert.deepStrictEqual(summary.layers, [{layer: 0, shape: [4, T, T]}, {layer: 1, shape: [4, T, T]}]);
  assert.ok(summary.max_row_sum_error < 1e-4, `rows must sum to 1, worst error ${summary.max_row_sum_error}`);
  assert.strictEqual(summary.top_heads.length, 5);

  // The human-readable output carries the same shapes.
  const text = await run(['--server', address, '--ids', promptIds.join(','), '--max-new-tokens',
    String(genIds.length), '--layers', '-1', '--heads', '1,3']);
  assert.strictEqual(text.code, 0, text.stderr);
  assert.match(text.stdout, new RegExp(`layer 1: attention \\[2, ${T}, ${T}\\]`));
  assert.doesNotMatch(text.stdout, /layer 0: attention/);
});

test('the half-float decoder matches IEEE binary16', () => {
  const {halfToFloat} = require('../capture.js');
  assert.strictEqual(halfToFloat(0x3c00), 1);
  assert.strictEqual(halfToFloat(0xc000), -2);
  assert.strictEqual(halfToFloat(0x3555), 0.333251953125);
  assert.strictEqual(halfToFloat(0x0001), Math.pow(2, -24));
  assert.strictEqual(halfToFloat(0x7c00), Infinity);
});

test('every field the client sends exists in the .proto; a misspelled one is refused', () => {
  const {buildRequest, parseArgs, checkFields, enumValues} = require('../capture.js');
  for (const argv of [['--text', 'Net sales', '--dtype', 'float16', '--layers', '0,-1'],
    ['--message', 'hi', '--heads', '1', '--dtype', 'bfloat16'], ['--ids', '1,2,3']]) {
    const request = buildRequest(parseArgs(argv));
    assert.doesNotThrow(() => checkFields('GenerateRequest', request));
    assert.strictEqual(request.generation.greedy, undefined);
  }
  assert.strictEqual(buildRequest(parseArgs(['--ids', '1', '--dtype', 'float16'])).capture.dtype,
      enumValues('DType').DTYPE_FLOAT16);
  // The old bug: generation.greedy does not exist, proto-loader would drop it silently.
  assert.throws(() => checkFields('GenerateRequest', {generation: {greedy: true}}),
      /generation\.greedy: attnscope\.v1\.GenerationParams has no field greedy/);
  assert.throws(() => checkFields('GenerateRequest', {messages: {messages: [{role: 'user', contnet: 'x'}]}}),
      /messages\.messages\.contnet/);
  assert.throws(() => checkFields('GenerateRequest', {capture: {dtpye: 2}}), /capture\.dtpye/);
});

test('a refusal carries the google.rpc.BadRequest field violations, with the human message', {skip: missing || false}, async (t) => {
  const address = await startServer(t);
  const {loadService, capture} = require('../capture.js');
  const AttnScope = loadService();
  const client = new AttnScope(address, grpc.credentials.createInsecure());
  t.after(() => client.close());
  const refused = async (request) => {
    try {
      await capture(client, request, new grpc.Metadata());
    } catch (error) {
      return error;
    }
    throw new Error(`${JSON.stringify(request)} was accepted`);
  };
  // Over the server's limits.max_new_tokens (config/server.yaml: 1024).
  let error = await refused({ids: {ids: [1, 2]}, generation: {max_new_tokens: 5000}});
  assert.strictEqual(error.code, 'INVALID_ARGUMENT');
  assert.match(error.details, /^generation\.max_new_tokens = 5000: exceeds the server limit limits\.max_new_tokens = 1024/);
  assert.deepStrictEqual(error.fieldViolations, [{field: 'generation.max_new_tokens', description: error.details}]);
  // An intervention's head out of range: the message keeps its short name, the violation
  // names the .proto path (GenerateRequest.interventions.items[0].ablate.heads[1]).
  error = await refused({ids: {ids: [1, 2]}, generation: {max_new_tokens: 1},
    interventions: {items: [{ablate: {layer: 0, heads: [1, 9]}}]}});
  assert.strictEqual(error.code, 'INVALID_ARGUMENT');
  assert.match(error.details, /^interventions\[0\]\.heads: index 9 is out of range; the model has 4/);
  assert.deepStrictEqual(error.fieldViolations, [{field: 'interventions.items[0].ablate.heads[1]', description: error.details}]);
  // The command line prints the refused field after the message.
  const cli = await run(['--server', address, '--ids', '1,2', '--layers', '5']);
  assert.strictEqual(cli.code, 1);
  assert.match(cli.stderr, /^capture\.js: INVALID_ARGUMENT capture\.layers: index 5 is out of range.* \[field: capture\.layers\]$/m);
});
