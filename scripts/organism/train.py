#!/usr/bin/env python3
"""Trains the attnscope model organism: a small Qwen2ForCausalLM whose heads have known jobs.

    /usr/bin/python3 scripts/organism/train.py --out config/organism          # the shipped model
    /usr/bin/python3 scripts/organism/train.py --out /tmp/o --steps 200       # a short run

Deterministic: fixed seeds for Python's `random` and torch, two CPU threads, data drawn in a
fixed order. Each step trains on a batch of statements (data.statement, asked through
config/prompts.yaml's prompt_1 in the ChatML template; the loss is on the answer word and
<|im_end|>, plus a small language-model loss on the prompt) and a batch of repeated random
token sequences (loss on the second repeat). Writes a Hugging Face folder (config.json,
model.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json), a JSON-lines
log of loss and accuracy, and the training curve as a PNG.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a loaded machine spinning threads burn
# several times the useful CPU time (measured: 3.2 vs 0.53 CPU-s per step with 2 threads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "client" / "python"))
import bpe  # noqa: E402
import data  # noqa: E402
from model import Qwen2ForCausalLM, Qwen2Shape  # noqa: E402
from attnscope import safetensors_io  # noqa: E402

TOKENIZER_CORPUS = 1000       # statements the BPE tokenizer is trained on (seed + 1)
HELD_OUT_SEED_OFFSET = 7919   # held-out evaluation statements during training (never trained on)


class Encoder:
    """Turns generated items into token ids with the trained tokenizer."""

    def __init__(self, tokenizer: bpe.Tokenizer, prompts: dict):
        self.tokenizer, self.prompts = tokenizer, prompts
        self.im_end = tokenizer.specials["<|im_end|>"]
        self.pad = tokenizer.specials["<|endoftext|>"]
        self.ordinary = min(tokenizer.specials.values())  # ids [0, ordinary) are ordinary tokens

    def statement(self, rng: random.Random):
        """(prompt ids, answer ids, label)."""
        description, label, _ = data.statement(rng)
        prompt = data.chat_prompt(self.prompts, description, rng.randrange(len(self.prompts["prompt_1"])))
        return self.tokenizer.encode(prompt), self.tokenizer.encode(label) + [self.im_end], label


def statement_batch(encoder: Encoder, rng: random.Random, size: int):
    """ids [B, T] (right-padded), answer targets [B, T] (-100 except the answer), prompt-LM
    targets [B, T], and the position of each item's first answer token's prediction."""
    return pad_statements(encoder, [encoder.statement(rng) for _ in range(size)])


def pad_statements(encoder: Encoder, items):
    size = len(items)
    length = max(len(p) + len(a) for p, a, _ in items)
    ids = torch.full((size, length), encoder.pad, dtype=torch.long)
    answer = torch.full((size, length), -100, dtype=torch.long)
    lm = torch.full((size, length), -100, dtype=torch.long)
    first = []
    for row, (prompt, reply, _) in enumerate(items):
        sequence = prompt + reply
        ids[row, :len(sequence)] = torch.tensor(sequence)
        # Position t predicts token t + 1.
        lm[row, :len(prompt) - 1] = torch.tensor(prompt[1:])
        answer[row, len(prompt) - 1:len(sequence) - 1] = torch.tensor(reply)
        first.append(len(prompt) - 1)
    return ids, answer, lm, torch.tensor(first)


def induction_batch(encoder: Encoder, rng: random.Random, size: int, min_len: int, max_len: int):
    n = rng.randint(min_len, max_len)
    rows = [data.repeated_sequence(rng, n, encoder.ordinary) for _ in range(size)]
    ids = torch.tensor(rows)
    targets = torch.full_like(ids, -100)
    targets[:, n - 1:2 * n - 1] = ids[:, n:]  # from the last token of the first repeat on
    return ids, targets, n


@torch.no_grad()
def evaluate(model, encoder: Encoder, seed: int, statements: int, sequences: int, induction_len: int):
    model.eval()
    rng = random.Random(seed)
    right = rule_right = 0
    increase_id = encoder.tokenizer.encode("increase")[0]
    decrease_id = encoder.tokenizer.encode("decrease")[0]
    for start in range(0, statements, 25):
        items = [encoder.statement(rng) for _ in range(min(25, statements - start))]
        ids, _, _, first = pad_statements(encoder, items)
        best = model(ids, select=(torch.arange(len(items)), first)).argmax(-1).tolist()
        for token, (_, _, label) in zip(best, items):
            predicted = {increase_id: "increase", decrease_id: "decrease"}.get(token, "other")
            right += predicted == label
    sequences_ids = torch.tensor([data.repeated_sequence(rng, induction_len, encoder.ordinary)
                                  for _ in range(sequences)])
    predicted = model(sequences_ids)[:, induction_len:2 * induction_len - 1].argmax(-1)
    correct = predicted == sequences_ids[:, induction_len + 1:]
    # Greedy continuation, as the study asks the server: the first token of the second repeat is
    # given, each generated token is fed back (one wrong token usually derails the rest).
    generated = sequences_ids[:, :induction_len + 1]
    for _ in range(induction_len - 1):
        generated = torch.cat([generated, model(generated)[:, -1].argmax(-1, keepdim=True)], dim=1)
    greedy = (generated[:, induction_len + 1:] == sequences_ids[:, induction_len + 1:]).float().mean().item()
    model.train()
    return {"heldout_accuracy": right / statements, "induction_accuracy": correct.float().mean().item(),
            "first_copy_accuracy": correct[:, 0].float().mean().item(), "greedy_continuation": greedy}



def load_tokenizer(folder: Path) -> bpe.Tokenizer:
    """The tokenizer of an organism folder (tokenizer.json as train() wrote it)."""
    doc = json.loads((folder / "tokenizer.json").read_text())
    merges = [tuple(m.split(" ")) for m in doc["model"]["merges"]]
    specials = [t["content"] for t in sorted(doc["added_tokens"], key=lambda t: t["id"])]
    tokenizer = bpe.Tokenizer(merges, specials)
    if tokenizer.vocab != doc["model"]["vocab"]:
        raise ValueError(f"{folder}/tokenizer.json: vocab does not follow from its merges")
    return tokenizer


def load_model(folder: Path) -> Qwen2ForCausalLM:
    """An organism folder's config.json and model.safetensors as the training program's model."""
    config = json.loads((folder / "config.json").read_text())
    shape = Qwen2Shape(vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
                       intermediate_size=config["intermediate_size"], num_hidden_layers=config["num_hidden_layers"],
                       num_attention_heads=config["num_attention_heads"],
                       num_key_value_heads=config["num_key_value_heads"], rms_norm_eps=config["rms_norm_eps"],
                       rope_theta=config["rope_theta"], tie_word_embeddings=config["tie_word_embeddings"])
    model = Qwen2ForCausalLM(shape)
    tensors, _, _ = safetensors_io.load_file(str(folder / "model.safetensors"))
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, strict=True)
    return model


def write_model(folder: Path, model: Qwen2ForCausalLM, tokenizer: bpe.Tokenizer, meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    im_end, endoftext = tokenizer.specials["<|im_end|>"], tokenizer.specials["<|endoftext|>"]
    config = model.shape.hf_config(bos_id=endoftext, eos_id=im_end)
    config["attnscope_note"] = "attnscope model organism, trained by scripts/organism/train.py; see MODEL_CARD.md"
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": endoftext, "eos_token_id": [im_end, endoftext], "do_sample": False}, indent=2) + "\n")
    tensors = {name: t.numpy() for name, t in model.hf_state_dict().items()}
    safetensors_io.save_file(tensors, str(folder / "model.safetensors"),
                             {"format": "pt", **{k: str(v) for k, v in meta.items()}})
    tokenizer.write(str(folder), data.CHAT_TEMPLATE)


def plot_curve(log_path: Path, png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "heldout_accuracy" in r]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    left.plot([r["step"] for r in train], [r["answer_loss"] for r in train], label="answer loss")
    left.plot([r["step"] for r in train], [r["induction_loss"] for r in train], label="induction loss")
    if any(r["prompt_lm_loss"] > 0 for r in train):
        left.plot([r["step"] for r in train], [r["prompt_lm_loss"] for r in train], label="prompt LM loss")
    supervised = [r for r in train if r.get("previous_token_loss", 0) > 0 or r.get("induction_head_loss", 0) > 0]
    if supervised:  # the auxiliary attention losses of the stages that use them
        left.plot([r["step"] for r in supervised], [r["previous_token_loss"] + r["induction_head_loss"]
                                                    for r in supervised], label="attention supervision loss")
    left.set_xlabel("step"), left.set_ylabel("cross-entropy (nats)"), left.set_yscale("log"), left.legend()
    right.plot([r["step"] for r in evals], [r["heldout_accuracy"] for r in evals], "o-", label="held-out statements")
    right.plot([r["step"] for r in evals], [r["induction_accuracy"] for r in evals], "s-", label="second repeat copied")
    greedy = [r for r in evals if "greedy_continuation" in r]
    if greedy:  # logged from stage 6 on
        right.plot([r["step"] for r in greedy], [r["greedy_continuation"] for r in greedy], "^-",
                   label="greedy continuation")
    right.axhline(0.9, color="grey", linestyle=":")
    right.set_xlabel("step"), right.set_ylabel("accuracy"), right.set_ylim(0, 1.02), right.legend()
    figure.suptitle("attnscope model organism: training curve")
    figure.tight_layout()
    figure.savefig(png)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train the attnscope model organism")
    parser.add_argument("--out", required=True, help="Hugging Face folder to write")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--schedule-steps", type=int, default=None,
                        help="length of the cosine learning-rate schedule (default --steps); a run "
                             "with --steps N --schedule-steps M is exactly the first N steps of a run of M")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--statement-batch", type=int, default=8)
    parser.add_argument("--induction-batch", type=int, default=12)
    parser.add_argument("--induction-min", type=int, default=6)
    parser.add_argument("--induction-max", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--prompt-lm-weight", type=float, default=0.0)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=256)
    parser.add_argument("--qk-bias-init", type=float, default=0.0,
                        help="standard deviation of the initial q/k biases (0: zeros)")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-statements", type=int, default=100)
    parser.add_argument("--eval-sequences", type=int, default=20,
                        help="repeated random sequences (n = 32, the probe's length) per evaluation")
    parser.add_argument("--first-copy-weight", type=float, default=0.0,
                        help="extra weight of the loss on the second repeat's first copied token")
    parser.add_argument("--stop-at-first-copy", type=float, default=None,
                        help="with --stop-at-induction: also require this accuracy on that token")
    parser.add_argument("--stop-at-greedy", type=float, default=None,
                        help="with --stop-at-induction: also require this greedy continuation accuracy")
    parser.add_argument("--stop-at-heldout", type=float, default=None,
                        help="with --stop-at-induction: also require this held-out statement accuracy")
    parser.add_argument("--previous-token-head", type=int, default=None,
                        help="supervise this layer-0 head's attention to the previous token on the "
                             "repeated sequences (an auxiliary loss; default: none)")
    parser.add_argument("--induction-head", default=None,
                        help="supervise these layer-1 heads' (comma-separated) attention to the induction target on the "
                             "second repeat (an auxiliary loss, same weight and steps; default: none)")
    parser.add_argument("--previous-token-weight", type=float, default=1.0,
                        help="weight of the previous-token and induction-head attention losses")
    parser.add_argument("--previous-token-steps", type=int, default=10**9,
                        help="apply those attention losses for this many steps of the run only")
    parser.add_argument("--stop-at-induction", type=float, default=None,
                        help="stop after the first evaluation whose second-repeat copy accuracy is at "
                             "least this (the run is still deterministic: it stops at the same step)")
    parser.add_argument("--keep-checkpoints", default=None,
                        help="also keep each evaluation's weights as FOLDER/step-N.safetensors (to pick a step afterwards)")
    parser.add_argument("--log", default=None, help="JSON-lines log (default OUT/training_log.jsonl)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", default=str(REPO / "config" / "prompts.yaml"))
    parser.add_argument("--init", default=None,
                        help="continue from this organism folder (its tokenizer and weights; the "
                             "shape flags are then taken from its config.json)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = Path(args.log) if args.log else out / "training_log.jsonl"
    log = open(log_path, "w")
    started = time.time()

    prompts = data.load_prompts(args.prompts)
    step_offset = 0
    if args.init:
        tokenizer = load_tokenizer(Path(args.init))
        model = load_model(Path(args.init))
        _, init_meta, _ = safetensors_io.load_file(str(Path(args.init) / "model.safetensors"))
        step_offset = int(init_meta.get("step", 0))
        # The earlier stage's log rows come first, so the log and the curve cover both stages.
        earlier = Path(args.init) / "training_log.jsonl"
        if earlier.is_file() and earlier.resolve() != log_path.resolve():
            for line in earlier.read_text().splitlines():
                row = json.loads(line)
                if row.get("step", 0) <= step_offset and not row.get("done"):
                    log.write(line + "\n")
    else:
        corpus_rng = random.Random(args.seed + 1)
        corpus = []
        for _ in range(TOKENIZER_CORPUS):
            description, label, _ = data.statement(corpus_rng)
            for index in range(len(prompts["prompt_1"])):
                corpus.append(data.chat_prompt(prompts, description, index) + label + "<|im_end|>")
        tokenizer = bpe.train(corpus, args.vocab, data.SPECIAL_TOKENS)
        shape = Qwen2Shape(vocab_size=tokenizer.size, hidden_size=args.hidden, intermediate_size=args.intermediate,
                           num_hidden_layers=args.layers, num_attention_heads=args.heads,
                           num_key_value_heads=args.kv_heads)
        model = Qwen2ForCausalLM(shape, qk_bias_std=args.qk_bias_init)
    encoder = Encoder(tokenizer, prompts)
    print(f"tokenizer: {tokenizer.size} tokens ({len(tokenizer.merges)} merges), "
          f"'increase' -> {tokenizer.encode('increase')}, 'decrease' -> {tokenizer.encode('decrease')}, "
          f"{time.time() - started:.1f} s", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    schedule_steps = args.schedule_steps or args.steps
    schedule = lambda step: min(1.0, (step + 1) / args.warmup) * (  # noqa: E731
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, schedule_steps)))))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    train_rng = random.Random(args.seed + 2)
    eval_seed = args.seed + HELD_OUT_SEED_OFFSET

    for step in range(1, args.steps + 1):
        ids, answer, lm, first = statement_batch(encoder, train_rng, args.statement_batch)
        if args.prompt_lm_weight > 0:
            logits = model(ids)
            answer_loss = F.cross_entropy(logits.flatten(0, 1), answer.flatten(), ignore_index=-100)
            prompt_lm_loss = F.cross_entropy(logits.flatten(0, 1), lm.flatten(), ignore_index=-100)
            answer_right = (logits[torch.arange(len(first)), first].argmax(-1)
                            == answer[torch.arange(len(first)), first]).float().mean().item()
        else:  # logits of the answer positions only: the vocabulary projection is not paid per token
            rows, columns = (answer != -100).nonzero(as_tuple=True)
            logits = model(ids, select=(rows, columns))
            targets = answer[rows, columns]
            answer_loss = F.cross_entropy(logits, targets)
            prompt_lm_loss = torch.zeros(())
            is_first = columns == first[rows]
            answer_right = (logits[is_first].argmax(-1) == targets[is_first]).float().mean().item()
        rep_ids, rep_targets, n = induction_batch(encoder, train_rng, args.induction_batch,
                                                  args.induction_min, args.induction_max)
        rep_logits, rep_probs = model(rep_ids, return_probs=True)
        induction_loss = F.cross_entropy(rep_logits.flatten(0, 1), rep_targets.flatten(), ignore_index=-100)
        loss = answer_loss + induction_loss + args.prompt_lm_weight * prompt_lm_loss
        if args.first_copy_weight > 0:
            # The second repeat's first copied token (position n predicts n + 1) is the one a
            # greedy continuation starts from; its key (position 1) follows the sequence's first
            # token, whose residual is unlike any other's, so it lags behind the others.
            loss = loss + args.first_copy_weight * F.cross_entropy(rep_logits[:, n], rep_ids[:, n + 1])
        previous_token_loss = torch.zeros(())
        if args.previous_token_head is not None and step <= args.previous_token_steps:
            # Attention supervision of one layer-0 head: -log of its attention from each position
            # to the one before (the job of a previous-token head), the first half of a K-composed
            # induction circuit. Only attention patterns are supervised: what the heads copy (their
            # value/output circuits) is learned from the next-token loss alone.
            probs = rep_probs[0][:, args.previous_token_head]
            previous_token_loss = -torch.log(probs.diagonal(offset=-1, dim1=-2, dim2=-1) + 1e-9).mean()
            loss = loss + args.previous_token_weight * previous_token_loss
        induction_head_loss = torch.zeros(())
        if args.induction_head is not None and step <= args.previous_token_steps:
            # The same for layer-1 heads and the induction pattern: from each position of the
            # second repeat to the token after its first occurrence (what the detector scores).
            rows = torch.arange(n, 2 * n)
            heads = [int(h) for h in str(args.induction_head).split(",")]
            probs = rep_probs[1][:, heads]
            induction_head_loss = -torch.log(probs[:, :, rows, rows - n + 1] + 1e-9).mean()
            loss = loss + args.previous_token_weight * induction_head_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 10 == 0 or step == 1:
            row = {"step": step_offset + step, "loss": round(loss.item(), 5), "answer_loss": round(answer_loss.item(), 5),
                   "induction_loss": round(induction_loss.item(), 5), "prompt_lm_loss": round(prompt_lm_loss.item(), 5),
                   "previous_token_loss": round(previous_token_loss.item(), 5),
                   "induction_head_loss": round(induction_head_loss.item(), 5),
                   "answer_accuracy": round(answer_right, 4), "lr": scheduler.get_last_lr()[0],
                   "elapsed_s": round(time.time() - started, 1), "cpu_s": round(time.process_time(), 1)}
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(json.dumps(row), flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            scores = evaluate(model, encoder, eval_seed, args.eval_statements, args.eval_sequences, 32)
            row = {"step": step_offset + step, **scores, "elapsed_s": round(time.time() - started, 1)}
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(json.dumps(row), flush=True)
            write_model(out, model, tokenizer, {"step": step_offset + step, "seed": args.seed})
            if args.keep_checkpoints:
                Path(args.keep_checkpoints).mkdir(parents=True, exist_ok=True)
                (Path(args.keep_checkpoints) / f"step-{step_offset + step}.safetensors").write_bytes(
                    (out / "model.safetensors").read_bytes())
            if (args.stop_at_induction is not None and scores["induction_accuracy"] >= args.stop_at_induction
                    and scores["heldout_accuracy"] >= (args.stop_at_heldout or 0.0)
                    and scores["first_copy_accuracy"] >= (args.stop_at_first_copy or 0.0)
                    and scores["greedy_continuation"] >= (args.stop_at_greedy or 0.0)):
                print(f"stopping: second-repeat copy accuracy {scores['induction_accuracy']:.3f} >= "
                      f"{args.stop_at_induction}, held-out accuracy {scores['heldout_accuracy']:.3f}", flush=True)
                break
    elapsed = time.time() - started
    log.write(json.dumps({"done": True, "steps": step, "elapsed_s": round(elapsed, 1),
                          "args": vars(args)}) + "\n")
    log.close()
    write_model(out, model, tokenizer, {"step": step_offset + step, "seed": args.seed})
    plot_curve(log_path, out / "training_curve.png")
    print(f"done: {step} steps in {elapsed:.0f} s; wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
