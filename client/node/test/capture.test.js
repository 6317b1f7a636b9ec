// Runs capture.js against a real attnscope-server on loopback serving the golden qwen2-tiny
// checkpoint, and checks the printed shapes and ids against the golden reference dumps.
// Skips (with the reason) when the server binary is not built.
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
// The reference dumps in the repository (tests/data/README.md says how they were made).
const GOLDEN = path.join(REPO, 'tests', 'data', 'golden', 'qwen2-tiny');

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
    execFile(process.execPath, [path.join(__dirname, '..', 'capture.js'), ...args], {timeout: 60000},
        (error, stdout, stderr) => resolve({code: error ? error.code || 1 : 0, stdout, stderr}));
  });
}

async function startServer(t) {
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const args = ['--model', path.join(GOLDEN, 'model'), '--listen', address];
  const config = path.join(REPO, 'config', 'server.yaml');
  if (fs.existsSync(config)) args.unshift('--config', config);
  const child = spawn(SERVER, args, {stdio: ['ignore', 'ignore', 'pipe']});
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  t.after(() => child.kill('SIGTERM'));
  // Ready when a capture of one id succeeds (the model is loaded and serving).
  for (let attempt = 0; attempt < 120; attempt++) {
    if (child.exitCode !== null) throw new Error(`server exited ${child.exitCode}: ${log}`);
    const probe = await run(['--server', address, '--ids', '1', '--max-new-tokens', '0', '--json']);
    if (probe.code === 0) return address;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`server at ${address} never became ready: ${log}`);
}

const missing = !fs.existsSync(SERVER) ? `no server binary at ${SERVER} (set ATTNSCOPE_BUILD_DIR)` : null;

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
