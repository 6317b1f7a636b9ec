// The view data document ("attnscope.view.v1", written by `attnscope view` and by the Python
// client's Capture.show()) and access to the attention it carries.
//
//   {format, model, tokens, token_ids, prompt_length, layers, heads,
//    thumbnails: {size: S, data: base64 uint8 [layers, heads, S, S]},
//    matrices: {"L:H" | "L:mean": {dtype, data: base64 lower triangle}},
//    deferred: {"L:H": dtype}: matrices in <script id="attnscope-matrix-L:H"> elements after
//              the viewer's script (the HTML file), read once the document has loaded,
//    embedded: {max_bytes, bytes, heads_total, heads_full, note},
//    terms: [{term, word, positions}], report: analysis JSON | null, serve: bool}
//
// A head's matrix travels as its lower triangle, row by row (row i holds keys 0..i), in the
// capture's dtype (float32, float16 or bfloat16 little-endian); a layer mean is float32.

export const TOP_KEYS = 8;

export function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; ++i) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

let halfTable = null;
function halfToFloatTable() {
  if (halfTable) return halfTable;
  halfTable = new Float32Array(65536);
  for (let h = 0; h < 65536; ++h) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    let value;
    if (exponent === 0) value = mantissa * 2 ** -24;
    else if (exponent === 31) value = mantissa ? NaN : Infinity;
    else value = (1 + mantissa / 1024) * 2 ** (exponent - 15);
    halfTable[h] = sign * value;
  }
  return halfTable;
}

// Little-endian bytes in `dtype` -> Float32Array.
export function bytesToFloats(bytes, dtype) {
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  if (dtype === "float32") return new Float32Array(buffer);
  const raw = new Uint16Array(buffer);
  const out = new Float32Array(raw.length);
  if (dtype === "float16") {
    const table = halfToFloatTable();
    for (let i = 0; i < raw.length; ++i) out[i] = table[raw[i]];
  } else if (dtype === "bfloat16") {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < raw.length; ++i) bits[i] = raw[i] << 16;
  } else {
    throw new Error(`unknown matrix dtype '${dtype}'`);
  }
  return out;
}

// One head's (or one layer mean's) causal matrix, stored as its lower triangle.
export class CausalMatrix {
  constructor(values, size) {
    const expected = (size * (size + 1)) / 2;
    if (values.length !== expected) {
      throw new Error(`matrix has ${values.length} values, expected ${expected} for T=${size}`);
    }
    this.values = values;
    this.size = size;
  }
  offset(row) {
    return (row * (row + 1)) / 2;
  }
  get(row, key) {
    return key > row ? 0 : this.values[this.offset(row) + key];
  }
  row(query) {
    const start = this.offset(query);
    return this.values.subarray(start, start + query + 1);
  }
  // Who attends to `key`: entry i - key is A[i, key] for i >= key.
  column(key) {
    const out = new Float32Array(this.size - key);
    for (let i = key; i < this.size; ++i) out[i - key] = this.values[this.offset(i) + key];
    return out;
  }
}

// The `count` largest entries of `values` as [{index, weight}], descending weight, ties to
// the lower index (the analysis library's top-k convention). `base` is added to indices.
export function topEntries(values, count, base = 0) {
  const best = [];
  for (let i = 0; i < values.length; ++i) {
    const w = values[i];
    if (best.length === count && w <= best[best.length - 1].weight) continue;
    let at = best.length;
    while (at > 0 && best[at - 1].weight < w) --at;
    best.splice(at, 0, { index: i + base, weight: w });
    if (best.length > count) best.pop();
  }
  return best;
}

export function headKey(layer, head) {
  return head === "mean" ? `${layer}:mean` : `${layer}:${head}`;
}

// Holds the document and hands out matrices: decoded from the page on first use, or fetched
// from `attnscope view --serve` when the page was not given them.
export class ViewData {
  constructor(doc) {
    if (doc.format !== "attnscope.view.v1") {
      throw new Error(`view data format is '${doc.format}', not attnscope.view.v1`);
    }
    this.doc = doc;
    this.size = doc.tokens.length;
    this.cache = new Map();
    this.pending = new Map();
    const thumbs = doc.thumbnails;
    this.thumbSize = thumbs.size;
    this.thumbBytes = base64ToBytes(thumbs.data);
  }
  get layers() {
    return this.doc.layers;
  }
  get heads() {
    return this.doc.heads;
  }
  thumbnail(layerIndex, headIndex) {
    const s = this.thumbSize;
    const start = (layerIndex * this.heads.length + headIndex) * s * s;
    return this.thumbBytes.subarray(start, start + s * s);
  }
  available(layer, head) {
    const key = headKey(layer, head);
    return (
      this.cache.has(key) || key in this.doc.matrices || key in (this.doc.deferred || {}) || Boolean(this.doc.serve)
    );
  }

  // A deferred matrix's base64 text, or null while the document is still loading.
  deferredEntry(key) {
    const dtype = (this.doc.deferred || {})[key];
    if (!dtype || document.readyState === "loading") return null;
    const element = document.getElementById(`attnscope-matrix-${key}`);
    return element ? { dtype, data: element.textContent } : null;
  }
  // The matrix if it is already decoded (hover paths must not wait).
  cached(layer, head) {
    const key = headKey(layer, head);
    if (this.cache.has(key)) return this.cache.get(key);
    const entry = this.doc.matrices[key] || this.deferredEntry(key);
    if (!entry) return null;
    const matrix = new CausalMatrix(bytesToFloats(base64ToBytes(entry.data), entry.dtype), this.size);
    this.cache.set(key, matrix);
    return matrix;
  }
  async load(layer, head) {
    const ready = this.cached(layer, head);
    if (ready) return ready;
    const key = headKey(layer, head);
    if (key in (this.doc.deferred || {}) && document.readyState === "loading") {
      await new Promise((resolve) => document.addEventListener("DOMContentLoaded", resolve, { once: true }));
      return this.cached(layer, head);
    }
    if (!this.doc.serve) return null;
    if (!this.pending.has(key)) {
      const url = `api/head?layer=${layer}&head=${head}`;
      this.pending.set(
        key,
        fetch(url)
          .then(async (response) => {
            if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
            const dtype = response.headers.get("X-Attnscope-Dtype") || "float32";
            const bytes = new Uint8Array(await response.arrayBuffer());
            const matrix = new CausalMatrix(bytesToFloats(bytes, dtype), this.size);
            this.cache.set(key, matrix);
            return matrix;
          })
          .finally(() => this.pending.delete(key)),
      );
    }
    return this.pending.get(key);
  }
}
