#!/usr/bin/env node
// attnscope from Node.js: runs GenerateWithAttention with nothing but the .proto file
// (loaded at run time by @grpc/proto-loader), reassembles the streamed chunks into one
// [heads, T, T] Float32Array per layer, verifies the stream the way the proto defines it
// (consecutive sequence numbers, every row of every head, chunk count, byte count, CRC-32),
// and prints per-layer shapes and the most focused heads.
//
//   node capture.js --server 127.0.0.1:50051 --text "Net sales rose." --max-new-tokens 8
//   node capture.js --server ADDR --ids 1,2,3 --json      # machine-readable summary
'use strict';

const zlib = require('zlib');
const grpc = require('@grpc/grpc-js');
const {loadService, enumValues, checkFields, numberList, walkFlags, refusal, errorLine} = require('./common.js');

function parseArgs(argv) {
  const DType = enumValues('DType');
  const args = {server: '127.0.0.1:50051', maxNewTokens: 8, layers: [], heads: [], dtype: DType.DTYPE_FLOAT32, json: false};
  walkFlags(argv, (flag, value) => {
    if (flag === '--server') args.server = value();
    else if (flag === '--text') args.text = value();
    else if (flag === '--message') args.message = value();
    else if (flag === '--ids') args.ids = numberList(value());
    else if (flag === '--max-new-tokens') args.maxNewTokens = Number(value());
    else if (flag === '--layers') args.layers = numberList(value());
    else if (flag === '--heads') args.heads = numberList(value());
    else if (flag === '--dtype') {
      args.dtype = {float32: DType.DTYPE_FLOAT32, float16: DType.DTYPE_FLOAT16, bfloat16: DType.DTYPE_BFLOAT16}[value()];
    }
    else if (flag === '--token') args.token = value();
    else if (flag === '--json') args.json = true;
    else return false;
    return true;
  });
  if (args.dtype === undefined) throw new Error('--dtype must be float32, float16 or bfloat16');
  if ([args.text, args.message, args.ids].filter((x) => x !== undefined).length !== 1) {
    throw new Error('give exactly one of --text, --message, --ids');
  }
  return args;
}

function buildRequest(args) {
  const request = {
    generation: {max_new_tokens: args.maxNewTokens},  // greedy unless `sample` is set
    capture: {layers: args.layers, heads: args.heads, dtype: args.dtype},
    client_tag: 'node-example',
  };
  if (args.text !== undefined) request.text = args.text;
  else if (args.message !== undefined) request.messages = {messages: [{role: 'user', content: args.message}]};
  else request.ids = {ids: args.ids};
  return checkFields('GenerateRequest', request);
}

// Values of one chunk as float32, whatever the wire dtype.
function decodeValues(chunk) {
  const DType = enumValues('DType');
  const data = chunk.data;
  const halfWidth = chunk.dtype === DType.DTYPE_FLOAT16 || chunk.dtype === DType.DTYPE_BFLOAT16;
  const count = data.length / (halfWidth ? 2 : 4);
  const out = new Float32Array(count);
  if (chunk.dtype === DType.DTYPE_FLOAT16) {
    for (let i = 0; i < count; i++) out[i] = halfToFloat(data.readUInt16LE(2 * i));
  } else if (chunk.dtype === DType.DTYPE_BFLOAT16) {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < count; i++) bits[i] = data.readUInt16LE(2 * i) << 16;
  } else {
    for (let i = 0; i < count; i++) out[i] = data.readFloatLE(4 * i);
  }
  return out;
}

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * Math.pow(2, -14) * (fraction / 1024);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * Math.pow(2, exponent - 15) * (1 + fraction / 1024);
}

// Runs one capture; resolves to {header, final, tokens, layers: Map(layer -> Float32Array), T, heads}.
function capture(client, request, metadata) {
  return new Promise((resolve, reject) => {
    const fail = (message) => reject(Object.assign(new Error(message), {code: 'DATA_LOSS'}));
    let header = null;
    let final = null;
    let nextSequence = 0;
    let bytes = 0;
    let crc = 0;
    const chunks = [];
    const generated = [];
    const stream = client.GenerateWithAttention(request, metadata);
    stream.on('data', (response) => {
      if (final !== null) return fail(`a ${response.event} message arrived after Final`);
      if (response.event === 'header') header = response.header;
      else if (header === null) return fail(`the stream began with ${response.event}, not Header`);
      else if (response.event === 'token') generated.push(response.token);
      else if (response.event === 'final') final = response.final;
      else if (response.event === 'chunk') {
        const chunk = response.chunk;
        if (chunk.sequence_number !== nextSequence) {
          stream.cancel();
          return fail(`chunk ${chunk.sequence_number} arrived where ${nextSequence} was expected`);
        }
        nextSequence++;
        bytes += chunk.data.length;
        crc = zlib.crc32(chunk.data, crc);
        chunks.push(chunk);
      }
    });
    // The code by name and the request fields the server refused (error.fieldViolations).
    stream.on('error', (error) => reject(refusal(error)));
    stream.on('end', () => {
      if (header === null) return fail('the stream ended before its Header');
      if (final === null) return fail(`the stream ended without Final after ${chunks.length} chunks`);
      if (Number(final.total_chunks) !== chunks.length) return fail(`Final reports ${final.total_chunks} chunks, ${chunks.length} arrived`);
      if (Number(final.total_attention_bytes) !== bytes) return fail(`Final reports ${final.total_attention_bytes} bytes, ${bytes} arrived`);
      if (final.data_crc32 !== crc) return fail(`CRC-32 ${crc} differs from Final's ${final.data_crc32}`);
      const P = header.prompt_ids.length;
      const T = P + generated.length;
      const heads = header.capture.heads;
      const headPosition = new Map(heads.map((h, i) => [h, i]));
      const layers = new Map();
      const seen = new Map();
      for (const layer of header.capture.layers) {
        layers.set(layer, new Float32Array(heads.length * T * T));
        seen.set(layer, new Uint8Array(heads.length * T));
      }
      for (const chunk of chunks) {
        const dense = layers.get(chunk.layer);
        if (!dense) return fail(`chunk for layer ${chunk.layer}, which is not captured`);
        const values = decodeValues(chunk);
        const K = chunk.key_length;
        if (K !== chunk.first_row + chunk.num_rows) return fail(`chunk ${chunk.sequence_number}: key_length ${K} != first_row + num_rows = ${chunk.first_row + chunk.num_rows}`);
        if (values.length !== chunk.heads.length * chunk.num_rows * K) return fail('chunk data does not match its shape');
        chunk.heads.forEach((head, hi) => {
          const h = headPosition.get(head);
          for (let r = 0; r < chunk.num_rows; r++) {
            const row = chunk.first_row + r;
            if (row >= T) return fail(`row ${row} is outside T=${T}`);
            if (seen.get(chunk.layer)[h * T + row]) return fail(`layer ${chunk.layer} row ${row} head ${head} arrived twice`);
            seen.get(chunk.layer)[h * T + row] = 1;
            const from = (hi * chunk.num_rows + r) * K;
            dense.set(values.subarray(from, from + K), (h * T + row) * T);
          }
        });
      }
      const Rows = enumValues('RowSelection');
      const [firstRow, endRow] = header.capture.rows === Rows.ROWS_PROMPT_ONLY ? [0, P]
        : header.capture.rows === Rows.ROWS_GENERATED_ONLY ? [P, T] : [0, T];
      for (const [layer, flags] of seen) {
        for (let h = 0; h < heads.length; h++) {
          for (let row = firstRow; row < endRow; row++) {
            if (!flags[h * T + row]) return fail(`layer ${layer}: row ${row} of head ${heads[h]} never arrived`);
          }
        }
      }
      resolve({header, final, generated, layers, T, heads, promptLength: P});
    });
  });
}

// Per head: mean row entropy (nats) over all rows; low entropy = focused head.
function headEntropies(result) {
  const {T, heads} = result;
  const out = [];
  for (const [layer, dense] of result.layers) {
    heads.forEach((head, h) => {
      let total = 0;
      for (let row = 0; row < T; row++) {
        let entropy = 0;
        for (let k = 0; k <= row; k++) {
          const p = dense[(h * T + row) * T + k];
          if (p > 0) entropy -= p * Math.log(p);
        }
        total += entropy;
      }
      out.push({layer, head, entropy: total / T});
    });
  }
  return out.sort((a, b) => a.entropy - b.entropy || a.layer - b.layer || a.head - b.head);
}

function maxRowSumError(result) {
  let worst = 0;
  const {T, heads} = result;
  for (const dense of result.layers.values()) {
    for (let h = 0; h < heads.length; h++) {
      for (let row = 0; row < T; row++) {
        let sum = 0;
        for (let k = 0; k < T; k++) sum += dense[(h * T + row) * T + k];
        worst = Math.max(worst, Math.abs(sum - 1));
      }
    }
  }
  return worst;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const AttnScope = loadService();
  const client = new AttnScope(args.server, grpc.credentials.createInsecure(),
      {'grpc.max_receive_message_length': -1});
  const metadata = new grpc.Metadata();
  if (args.token) metadata.set('authorization', `Bearer ${args.token}`);
  try {
    const result = await capture(client, buildRequest(args), metadata);
    const layers = [...result.layers.keys()].map((layer) => ({layer, shape: [result.heads.length, result.T, result.T]}));
    const topHeads = headEntropies(result).slice(0, 5);
    const ids = result.header.prompt_ids.concat(result.final.generated_ids).map(Number);
    if (args.json) {
      console.log(JSON.stringify({
        prompt_length: result.promptLength, token_ids: ids, generated_text: result.final.generated_text,
        stop_reason: result.final.stop_reason, heads: result.heads, layers, top_heads: topHeads,
        max_row_sum_error: maxRowSumError(result), chunks: Number(result.final.total_chunks),
      }));
    } else {
      console.log(`model ${result.header.model.name}: ${result.promptLength} prompt + ` +
                  `${result.generated.length} generated tokens (${result.final.stop_reason})`);
      console.log(`generated: ${JSON.stringify(result.final.generated_text)}`);
      for (const {layer, shape} of layers) console.log(`layer ${layer}: attention [${shape.join(', ')}]`);
      console.log('most focused heads (lowest mean row entropy):');
      for (const {layer, head, entropy} of topHeads) console.log(`  layer ${layer} head ${head}: ${entropy.toFixed(4)} nats`);
    }
  } finally {
    client.close();
  }
}

if (require.main === module) {
  main().catch((error) => {
    console.error(errorLine('capture.js', error));
    process.exit(1);
  });
}

module.exports = {loadService, enumValues, checkFields, capture, buildRequest, parseArgs, headEntropies,
  decodeValues, halfToFloat};
