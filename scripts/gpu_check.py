#!/usr/bin/env python3
"""The Python half of scripts/gpu-check.sh (run it through that script).

  gpu_check.py prompt --length N --seed S --out FILE
      N random token ids (numpy, seeded), the prompt both engines run.
  gpu_check.py golden-bf16 --cli BIN --golden DIR --device cuda --out FILE
      bf16 on the device: the engine (through `attnscope capture`) against transformers'
      eager Qwen2 in bf16 on the same device, logits and every attention matrix.
  gpu_check.py hf-bench --shape 0.5b|7b --dir DIR --prompt-file F --prompt-length N
                        --decode N --out FILE
      Builds a random bf16 checkpoint of that shape on the device (saved to DIR for the
      engine), then times transformers' eager generate(output_attentions=True) on it.
  gpu_check.py report --out DIR --mode gpu|cpu
      Collects DIR/*.json into DIR/results.json and DIR/table.md and prints the table.

Needs numpy; golden-bf16 and hf-bench need torch and transformers (the GPU machine has
them; Debian's CPU machine has no transformers, and the script says so instead).
"""
import argparse
import datetime
import glob
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

SHAPES = {
    # Qwen2-0.5B and Qwen2-7B (config.json of the released checkpoints), random weights.
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                 tie_word_embeddings=True),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
               num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
               tie_word_embeddings=False),
}

# bf16 keeps 8 significant bits (unit roundoff 2^-8 = 0.0039). Two bf16 implementations
# round after different operations and sum in different orders, so element-wise equality is
# not expected: probabilities (in [0, 1]) may differ by a few units of 2^-8, logits by a few
# percent of their largest magnitude (the same bound as the CPU bf16-vs-fp32 golden test).
ATTENTION_BOUND = 0.02       # about 5 x 2^-8, absolute
LOGIT_RELATIVE_BOUND = 0.05  # of max |logit|


def write_json(path, document):
    with open(path, "w") as out:
        json.dump(document, out, indent=1)
        out.write("\n")


def cmd_prompt(args):
    ids = np.random.default_rng(args.seed).integers(0, args.vocab, size=args.length)
    with open(args.out, "w") as out:
        out.write(",".join(str(int(i)) for i in ids) + "\n")


def read_safetensors(path):
    """A safetensors file as {name: numpy float32/int64 array} (no safetensors package)."""
    with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_size))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        if info["dtype"] == "F32":
            array = np.frombuffer(raw, dtype=np.float32)
        elif info["dtype"] == "I64":
            array = np.frombuffer(raw, dtype=np.int64)
        elif info["dtype"] == "BF16":
            array = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}")
        out[name] = array.reshape(info["shape"])
    return out


def cmd_golden_bf16(args):
    import torch
    from transformers import AutoModelForCausalLM

    results = []
    for model_name in sorted(os.listdir(args.golden)):
        model_dir = os.path.join(args.golden, model_name, "model")
        if not os.path.isdir(model_dir):
            continue
        ids = np.load(os.path.join(args.golden, model_name, "full_ids.npy")).astype(np.int64)
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, torch_dtype=torch.bfloat16, attn_implementation="eager").to(args.device)
        model.eval()
        with torch.no_grad():
            out = model(torch.tensor(ids[None], device=args.device), output_attentions=True)
        reference_logits = out.logits[0].float().cpu().numpy()
        reference_attention = [a[0].float().cpu().numpy() for a in out.attentions]
        capture = os.path.join(args.work, f"{model_name}-bf16.safetensors")
        subprocess.run([args.cli, "capture", "--model", model_dir, "--ids",
                        ",".join(str(int(i)) for i in ids), "--max-new-tokens", "0",
                        "--layers", "all", "--dtype", "float32", "--save-logits",
                        "--device", args.device, "--run-dtype", "bfloat16", "--out", capture],
                       check=True)
        tensors = read_safetensors(capture)
        logit_diff = float(np.abs(tensors["logits"] - reference_logits).max())
        logit_scale = float(np.abs(reference_logits).max())
        attention_diff = max(
            float(np.abs(tensors[f"attention.{layer}"] - reference).max())
            for layer, reference in enumerate(reference_attention))
        ok = attention_diff <= ATTENTION_BOUND and logit_diff <= LOGIT_RELATIVE_BOUND * logit_scale
        results.append(dict(model=model_name, tokens=int(len(ids)), max_abs_logit_diff=logit_diff,
                            max_abs_logit=logit_scale, max_abs_attention_diff=attention_diff,
                            attention_bound=ATTENTION_BOUND,
                            logit_bound=LOGIT_RELATIVE_BOUND * logit_scale, passed=bool(ok)))
        print(f"{model_name}: bf16 on {args.device}: max |attention diff| {attention_diff:.5f} "
              f"(bound {ATTENTION_BOUND}), max |logit diff| {logit_diff:.4f} of max |logit| "
              f"{logit_scale:.3f} (bound {LOGIT_RELATIVE_BOUND * logit_scale:.4f}): "
              f"{'pass' if ok else 'FAIL'}")
    write_json(args.out, dict(step="golden-bf16", device=args.device, results=results,
                              passed=bool(results) and all(r["passed"] for r in results)))
    return 0 if results and all(r["passed"] for r in results) else 1


def cmd_hf_bench(args):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = SHAPES[args.shape]
    config = Qwen2Config(max_position_embeddings=32768, rope_theta=1000000.0,
                         rms_norm_eps=1e-6, use_sliding_window=False, bos_token_id=151643,
                         eos_token_id=151643, **shape)
    torch.manual_seed(0)
    start = time.time()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(args.device):
        model = Qwen2ForCausalLM(config)
    torch.set_default_dtype(previous)
    model.eval()
    model.save_pretrained(args.dir, safe_serialization=True, max_shard_size="4GB")
    # The engine reads rope_theta at the top level (transformers 5 nests it).
    config_path = os.path.join(args.dir, "config.json")
    with open(config_path) as f:
        saved = json.load(f)
    saved["rope_theta"] = 1000000.0
    saved.pop("rope_parameters", None)
    saved.pop("rope_scaling", None)
    write_json(config_path, saved)
    build_seconds = time.time() - start
    with open(args.prompt_file) as f:
        ids = [int(x) for x in f.read().replace("\n", "").split(",") if x][:args.prompt_length]
    input_ids = torch.tensor([ids], device=args.device)
    model.config._attn_implementation = "eager"
    kwargs = dict(max_new_tokens=args.decode, min_new_tokens=args.decode, do_sample=False,
                  output_attentions=True, return_dict_in_generate=True, pad_token_id=0)
    with torch.no_grad():
        model.generate(input_ids[:, :32], **dict(kwargs, max_new_tokens=4, min_new_tokens=4))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        best = 1e30
        for _ in range(2):
            start = time.time()
            out = model.generate(input_ids, **kwargs)
            torch.cuda.synchronize()
            best = min(best, time.time() - start)
            del out
    peak = torch.cuda.max_memory_allocated() / 2**20
    document = dict(step=f"hf-{args.shape}", shape=args.shape, device=args.device,
                    transformers=__import__("transformers").__version__,
                    torch=torch.__version__, prompt_tokens=len(ids), decode_tokens=args.decode,
                    checkpoint_seconds=build_seconds, eager_generate_attentions_seconds=best,
                    peak_device_mib=peak, passed=True)
    write_json(args.out, document)
    print(json.dumps(document))
    return 0


def figure(bench, prefix):
    for entry in bench.get("figures", []):
        if entry["figure"].startswith(prefix):
            return entry
    return None


def cmd_report(args):
    documents = {}
    for path in sorted(glob.glob(os.path.join(args.out, "*.json"))):
        if os.path.basename(path) == "results.json":
            continue
        with open(path) as f:
            try:
                documents[os.path.splitext(os.path.basename(path))[0]] = json.load(f)
            except json.JSONDecodeError as error:
                documents[os.path.basename(path)] = dict(error=str(error), passed=False)
    steps = []
    steps_path = os.path.join(args.out, "steps.tsv")
    if os.path.exists(steps_path):
        with open(steps_path) as f:
            for line in f:
                name, status, seconds, note = (line.rstrip("\n").split("\t") + ["", "", ""])[:4]
                steps.append(dict(step=name, status=status, seconds=float(seconds or 0), note=note))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    header = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  machine=f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
                  mode=args.mode, commit=commit)
    if args.mode == "gpu":
        try:
            import torch
            header["gpu"] = torch.cuda.get_device_name(0)
            header["torch"] = torch.__version__
        except Exception as error:  # noqa: BLE001 - the report says what failed
            header["gpu"] = f"unknown ({error})"
    lines = [f"attnscope gpu-check ({args.mode} mode), {header['date']}, {header['machine']}"
             + (f", {header.get('gpu')}" if args.mode == "gpu" else "") + f", commit {commit}",
             "", "| step | status | seconds | note |", "|---|---|---|---|"]
    for step in steps:
        lines.append(f"| {step['step']} | {step['status']} | {step['seconds']:.1f} | {step['note']} |")
    for name, bench in documents.items():
        if not name.startswith("engine-"):
            continue
        lines += ["", f"engine benchmark {bench.get('label', name)}: {bench.get('layers')} layers, "
                  f"{bench.get('heads')} heads, {bench.get('kv_heads')} KV heads, hidden "
                  f"{bench.get('hidden')}, {bench.get('dtype')} on {bench.get('device')}", "",
                  "| figure | value | baseline | ratio |", "|---|---|---|---|"]
        for entry in bench["figures"]:
            baseline = f"{entry['baseline']:.2f}" if "baseline" in entry else ""
            ratio = f"{entry['ratio']:.2f}" if "ratio" in entry else ""
            lines.append(f"| {entry['figure']} | {entry['value']:.2f} | {baseline} | {ratio} |")
        shape = name[len("engine-"):]
        hf = documents.get(f"hf-{shape}")
        captured = figure(bench, "generation s, all layers captured")
        if hf and captured:
            speedup = hf["eager_generate_attentions_seconds"] / captured["value"]
            lines.append(f"| transformers eager generate(output_attentions=True) s vs engine "
                         f"all layers captured (goal >= 3x) | "
                         f"{hf['eager_generate_attentions_seconds']:.3f} | {captured['value']:.3f} "
                         f"| {speedup:.2f} |")
        elif args.mode == "cpu":
            lines.append("| transformers eager generate(output_attentions=True) | not run: "
                         "transformers is not installed on this machine | | |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table)
    failed = [s for s in steps if s["status"] == "FAIL"]
    write_json(os.path.join(args.out, "results.json"),
               dict(header, steps=steps, documents=documents, passed=not failed))
    print(table)
    return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prompt")
    p.add_argument("--length", type=int, required=True)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--vocab", type=int, default=150000)
    p.add_argument("--out", required=True)
    p = sub.add_parser("golden-bf16")
    p.add_argument("--cli", required=True)
    p.add_argument("--golden", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--work", default="/tmp")
    p.add_argument("--out", required=True)
    p = sub.add_parser("hf-bench")
    p.add_argument("--shape", choices=sorted(SHAPES), required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--prompt-file", required=True)
    p.add_argument("--prompt-length", type=int, default=512)
    p.add_argument("--decode", type=int, default=32)
    p.add_argument("--out", required=True)
    p = sub.add_parser("report")
    p.add_argument("--out", required=True)
    p.add_argument("--mode", choices=["gpu", "cpu"], required=True)
    args = parser.parse_args()
    handler = {"prompt": cmd_prompt, "golden-bf16": cmd_golden_bf16, "hf-bench": cmd_hf_bench,
               "report": cmd_report}[args.command]
    sys.exit(handler(args) or 0)


if __name__ == "__main__":
    main()
