#!/usr/bin/python3
"""Independent reference for causal interventions (tests/engine/intervention_test.cc).

A from-scratch PyTorch Qwen2 forward over the golden checkpoints' safetensors (float32, CPU),
written against transformers' modeling_qwen2.py and not against the engine's code, with the
edits applied where the issue puts them: head ablation and patching on o_proj's input (one
query head's softmax(QK^T)V slice), knockout as -inf scores before the softmax. Candidates are
scored by one full forward of prompt + candidate each (no packing, no KV cache). The forward
is first checked against transformers' own logits in the golden folder.

    /usr/bin/python3 tests/engine/intervention_reference.py tests/data/golden tests/engine/testdata

writes OUT_DIR/interventions_<model>.json for qwen2-tiny and qwen2-tiny-tied.
"""
import json
import math
import struct
import sys

import numpy as np
import torch


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        begin, end = info["data_offsets"]
        array = np.frombuffer(data[base + begin:base + end], dtype="<f4").reshape(info["shape"])
        tensors[name] = torch.from_numpy(array.copy())
    return tensors


class Reference:
    def __init__(self, model_dir):
        with open(model_dir + "/config.json") as f:
            self.cfg = json.load(f)
        self.w = load_safetensors(model_dir + "/model.safetensors")
        c = self.cfg
        self.layers = c["num_hidden_layers"]
        self.heads = c["num_attention_heads"]
        self.kv_heads = c["num_key_value_heads"]
        self.dim = c["hidden_size"] // self.heads
        self.lm_head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])

    def rms(self, x, weight):
        variance = x.pow(2).mean(-1, keepdim=True)
        return weight * (x * torch.rsqrt(variance + self.cfg["rms_norm_eps"]))

    def forward(self, ids, prompt_length, edits=(), source=None, record=None):
        """Logits [T, vocab] and per-layer attention probs. edits: list of dicts (kind, layer,
        heads, ...); source: per-layer head outputs of the patch source; record: dict filled
        with each layer's head outputs [H, T, dim]."""
        w, T, dim = self.w, len(ids), self.dim
        x = w["model.embed_tokens.weight"][torch.tensor(ids)]
        inv_freq = 1.0 / (self.cfg["rope_theta"] ** (torch.arange(0, dim, 2).float() / dim))
        freqs = torch.outer(torch.arange(T).float(), inv_freq)
        emb = torch.cat([freqs, freqs], -1)
        cos, sin = emb.cos(), emb.sin()

        def rotate(t):
            half = t.shape[-1] // 2
            return torch.cat([-t[..., half:], t[..., :half]], -1)

        probs_by_layer = []
        for l in range(self.layers):
            p = "model.layers.%d." % l
            h = self.rms(x, w[p + "input_layernorm.weight"])
            q = (h @ w[p + "self_attn.q_proj.weight"].T + w[p + "self_attn.q_proj.bias"])
            k = (h @ w[p + "self_attn.k_proj.weight"].T + w[p + "self_attn.k_proj.bias"])
            v = (h @ w[p + "self_attn.v_proj.weight"].T + w[p + "self_attn.v_proj.bias"])
            q = q.view(T, self.heads, dim).transpose(0, 1)
            k = k.view(T, self.kv_heads, dim).transpose(0, 1)
            v = v.view(T, self.kv_heads, dim).transpose(0, 1)
            q = q * cos + rotate(q) * sin
            k = k * cos + rotate(k) * sin
            rep = self.heads // self.kv_heads
            k = k.repeat_interleave(rep, 0)
            v = v.repeat_interleave(rep, 0)
            scores = q @ k.transpose(1, 2) / math.sqrt(dim)
            scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            for e in edits:
                if e["kind"] != "knockout" or e["layer"] != l:
                    continue
                rows = torch.zeros(T, dtype=torch.bool)
                if e["rows"] == "all":
                    rows[:] = True
                elif e["rows"] == "generated":
                    rows[prompt_length:] = True
                else:
                    rows[e["row_begin"]:e["row_end"]] = True
                keys = torch.zeros(T, dtype=torch.bool)
                keys[[k_ for k_ in e["keys"] if k_ < T]] = True
                hit = rows[:, None] & keys[None, :]
                for head in e["heads"]:
                    scores[head] = scores[head].masked_fill(hit, float("-inf"))
            probs = torch.softmax(scores, -1)
            probs_by_layer.append(probs)
            out = probs @ v  # [H, T, dim]
            # The o_proj input hook: [T, H*dim] viewed per head.
            o_input = out.transpose(0, 1).reshape(T, self.heads * dim).clone()
            per_head = o_input.view(T, self.heads, dim)
            if record is not None:
                record[l] = per_head.transpose(0, 1).clone()
            clean = per_head.clone()
            for e in edits:
                if e["layer"] != l:
                    continue
                for head in e["heads"]:
                    if e["kind"] == "ablate" and e["mode"] == "zero":
                        per_head[:, head] = 0
                    elif e["kind"] == "ablate":
                        per_head[:, head] = clean[:prompt_length, head].mean(0)
                    elif e["kind"] == "patch":
                        positions = e["positions"] or list(range(prompt_length))
                        for pos in positions:
                            per_head[pos, head] = source[l][head, pos]
            x = x + o_input @ w[p + "self_attn.o_proj.weight"].T
            g = self.rms(x, w[p + "post_attention_layernorm.weight"])
            mlp = torch.nn.functional.silu(g @ w[p + "mlp.gate_proj.weight"].T) * (
                g @ w[p + "mlp.up_proj.weight"].T)
            x = x + mlp @ w[p + "mlp.down_proj.weight"].T
        x = self.rms(x, w["model.norm.weight"])
        return x @ self.lm_head.T, probs_by_layer

    def source_outputs(self, source_ids):
        record = {}
        self.forward(source_ids, len(source_ids), record=record)
        return record

    def score(self, prompt, candidates, edits, source_ids):
        source = self.source_outputs(source_ids) if source_ids else None
        out = []
        for cand in candidates:
            logits, _ = self.forward(prompt + cand, len(prompt), edits, source)
            logprobs = torch.log_softmax(logits, -1)
            token_lp = [float(logprobs[len(prompt) - 1 + j, t]) for j, t in enumerate(cand)]
            first = logits[len(prompt) - 1]
            rank = 1 + int((first > first[cand[0]]).sum())
            out.append({"token_logprobs": token_lp, "logprob": float(sum(token_lp)),
                        "first_token_rank": rank})
        return out

    def greedy(self, prompt, steps, edits, source_ids):
        source = self.source_outputs(source_ids) if source_ids else None
        ids = list(prompt)
        for _ in range(steps):
            logits, _ = self.forward(ids, len(prompt), edits, source)
            ids.append(int(logits[-1].argmax()))
        return ids[len(prompt):]


def cases(prompt):
    P = len(prompt)
    source = [(t * 7 + 3) % 500 for t in prompt]
    return [
        {"name": "clean", "interventions": []},
        {"name": "zero_ablation", "interventions": [
            {"kind": "ablate", "layer": 1, "heads": [0, 2], "mode": "zero"},
            {"kind": "ablate", "layer": 0, "heads": [3], "mode": "zero"}]},
        {"name": "mean_ablation", "interventions": [
            {"kind": "ablate", "layer": 0, "heads": [1], "mode": "mean"},
            {"kind": "ablate", "layer": 1, "heads": [2, 3], "mode": "mean"}]},
        {"name": "knockout", "interventions": [
            {"kind": "knockout", "layer": 0, "heads": [0, 1], "rows": "all", "keys": [1, 2, 5]},
            {"kind": "knockout", "layer": 1, "heads": [2], "rows": "generated",
             "keys": [0, 3, P - 1]},
            {"kind": "knockout", "layer": 1, "heads": [3], "rows": "range", "row_begin": 10,
             "row_end": P + 1, "keys": [4, 6, P]}]},
        {"name": "patch", "source": source, "interventions": [
            {"kind": "patch", "layer": 0, "heads": [1, 3], "positions": [2, 4, 5, P - 1]},
            {"kind": "patch", "layer": 1, "heads": [0], "positions": []}]},
        {"name": "combined", "source": source, "interventions": [
            {"kind": "ablate", "layer": 0, "heads": [0], "mode": "mean"},
            {"kind": "knockout", "layer": 0, "heads": [2], "rows": "all", "keys": [3, 7]},
            {"kind": "patch", "layer": 1, "heads": [1], "positions": [P - 1, P - 2]},
            {"kind": "ablate", "layer": 1, "heads": [3], "mode": "zero"}]},
    ]


def main():
    golden, out_dir = sys.argv[1], sys.argv[2]
    for model in ["qwen2-tiny", "qwen2-tiny-tied"]:
        folder = "%s/%s" % (golden, model)
        ref = Reference(folder + "/model")
        full_ids = [int(t) for t in np.load(folder + "/full_ids.npy")]
        logits, _ = ref.forward(full_ids, len(full_ids))
        hf = torch.from_numpy(np.load(folder + "/all_tokens_logits.npy")).float()
        worst = float((logits - hf.view_as(logits)).abs().max())
        assert worst < 1e-4, "reference forward differs from transformers by %g" % worst
        prompt = [int(t) for t in np.load(folder + "/prompt_ids.npy")]
        candidates = [[399, 125, 155], [17], [301, 44]]
        doc = {"model": model, "prompt": prompt, "candidates": candidates,
               "reference_vs_transformers_max_abs_logit_diff": worst, "cases": []}
        for case in cases(prompt):
            edits, source = case["interventions"], case.get("source", [])
            entry = dict(case)
            entry["scores"] = ref.score(prompt, candidates, edits, source)
            entry["greedy_4"] = ref.greedy(prompt, 4, edits, source)
            _, probs = ref.forward(prompt, len(prompt), edits,
                                   ref.source_outputs(source) if source else None)
            # The captured attention shows the knocked-out pattern: kept for those layers.
            entry["prompt_attention"] = {
                str(l): [float("%.8g" % v) for v in probs[l].flatten().tolist()]
                for l in sorted({e["layer"] for e in edits if e["kind"] == "knockout"})}
            doc["cases"].append(entry)
        sweep = {}
        for mode in ["zero", "mean"]:
            table = []
            for l in range(ref.layers):
                for h in range(ref.heads):
                    s = ref.score(prompt, candidates[:2],
                                  [{"kind": "ablate", "layer": l, "heads": [h], "mode": mode}], [])
                    table.append({"layer": l, "head": h,
                                  "logit_diff": s[0]["logprob"] - s[1]["logprob"]})
            sweep[mode] = table
        doc["sweep"] = sweep
        with open("%s/interventions_%s.json" % (out_dir, model), "w") as f:
            json.dump(doc, f)
        print(model, "reference vs transformers max |logit diff|", worst)


if __name__ == "__main__":
    main()
