// An independent reader of capture files for the tests: parses the safetensors layout
// itself (8-byte header length, JSON header, data) instead of using the viewer's code.
import { readFileSync } from "node:fs";

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

export function readCapture(path) {
  const file = readFileSync(path);
  const headerLength = Number(file.readBigUInt64LE(0));
  const header = JSON.parse(file.subarray(8, 8 + headerLength).toString("utf8"));
  const dataStart = 8 + headerLength;
  const meta = header.__metadata__;
  const tensor = (name) => {
    const info = header[name];
    if (!info) throw new Error(`${path}: no tensor ${name}`);
    const [begin, end] = info.data_offsets;
    const bytes = file.subarray(dataStart + begin, dataStart + end);
    const count = info.shape.reduce((a, b) => a * b, 1);
    const out = new Float64Array(count);
    if (info.dtype === "F32") for (let i = 0; i < count; ++i) out[i] = bytes.readFloatLE(4 * i);
    else if (info.dtype === "F16") for (let i = 0; i < count; ++i) out[i] = halfToFloat(bytes.readUInt16LE(2 * i));
    else if (info.dtype === "I64") for (let i = 0; i < count; ++i) out[i] = Number(bytes.readBigInt64LE(8 * i));
    else throw new Error(`${name}: dtype ${info.dtype} not handled by the test reader`);
    return { shape: info.shape, values: out };
  };
  const ids = tensor("token_ids").values;
  const T = ids.length;
  const layers = JSON.parse(meta.layers);
  const heads = JSON.parse(meta.heads);
  const attention = new Map(layers.map((l) => [l, tensor(`attention.${l}`).values]));
  return {
    T,
    layers,
    heads,
    promptLength: Number(meta.prompt_length),
    tokens: JSON.parse(meta.tokens),
    // A[query, key] of model head `head` in `layer`; head "mean" averages the captured heads.
    weight(layer, head, query, key) {
      const a = attention.get(layer);
      if (head === "mean") {
        let sum = 0;
        for (let h = 0; h < heads.length; ++h) sum += a[(h * T + query) * T + key];
        return sum / heads.length;
      }
      const h = heads.indexOf(head);
      return a[(h * T + query) * T + key];
    },
  };
}

// Top `count` keys of row `query` ([{position, weight}], descending, ties to the lower
// position), or with `reverse` the top queries attending to key `query`.
export function topKeys(capture, layer, head, query, count, reverse = false) {
  const entries = [];
  if (!reverse) {
    for (let k = 0; k <= query; ++k) entries.push({ position: k, weight: capture.weight(layer, head, query, k) });
  } else {
    for (let q = query; q < capture.T; ++q) entries.push({ position: q, weight: capture.weight(layer, head, q, query) });
  }
  entries.sort((a, b) => b.weight - a.weight || a.position - b.position);
  return entries.slice(0, count);
}
