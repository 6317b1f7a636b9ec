// The Node tests' real attnscope-server on loopback, serving the golden qwen2-tiny checkpoint,
// and their runs of the command-line scripts. (Outside test/ so that `node --test test/` does
// not run it as a test file.)
'use strict';

const fs = require('fs');
const net = require('net');
const path = require('path');
const {spawn, execFile} = require('child_process');

const REPO = path.join(__dirname, '..', '..', '..');
const BUILD = process.env.ATTNSCOPE_BUILD_DIR || path.join(REPO, 'build');
const SERVER = path.join(BUILD, 'server', 'service', 'attnscope-server');
// The reference dumps in the repository (tests/data/README.md says how they were made).
const GOLDEN = path.join(REPO, 'tests', 'data', 'golden', 'qwen2-tiny');

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

// Runs client/node/<script> with `args`: resolves to {code, stdout, stderr}.
function runScript(script, args, timeoutMs) {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(__dirname, '..', script), ...args], {timeout: timeoutMs},
        (error, stdout, stderr) => resolve({code: error ? error.code || 1 : 0, stdout, stderr}));
  });
}

// Starts the server (stopped when test `t` ends) and resolves to its address once `probe`
// (address -> Promise<boolean>, a small request) succeeds: the model is loaded and serving.
async function startServer(t, probe, attempts) {
  const address = `127.0.0.1:${await freePort()}`;
  const args = ['--model', path.join(GOLDEN, 'model'), '--listen', address];
  const config = path.join(REPO, 'config', 'server.yaml');
  if (fs.existsSync(config)) args.unshift('--config', config);
  const child = spawn(SERVER, args, {stdio: ['ignore', 'ignore', 'pipe']});
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  t.after(() => child.kill('SIGTERM'));
  for (let attempt = 0; attempt < attempts; attempt++) {
    if (child.exitCode !== null) throw new Error(`server exited ${child.exitCode}: ${log}`);
    if (await probe(address)) return address;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`server at ${address} never became ready: ${log}`);
}

// Why a test needing the server cannot run, or null.
const missing = !fs.existsSync(SERVER) ? `no server binary at ${SERVER} (set ATTNSCOPE_BUILD_DIR)`
  : !fs.existsSync(path.join(GOLDEN, 'model', 'config.json')) ? `no golden model at ${GOLDEN}` : null;

module.exports = {REPO, GOLDEN, freePort, runScript, startServer, missing};
