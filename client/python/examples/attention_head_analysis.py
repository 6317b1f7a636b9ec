# %% [markdown]
# # Attention head analysis of an earnings-direction prompt
#
# The research notebook, reproduced against an attnscope server: load the financial
# statements and the prompt templates, render the chat with the model's template (the server
# does it), generate while capturing every layer's attention, then look at per-layer
# statistics, heatmaps, the head grid, the attention generated tokens pay to financial terms,
# the head-specialisation report and the top-k keys of "sales" and "increase".
#
# Run as a script: `python3 attention_head_analysis.py --server 127.0.0.1:50051 --out figures/`
# or as a notebook (settings from ATTNSCOPE_SERVER / ATTNSCOPE_OUT / ATTNSCOPE_MAX_NEW_TOKENS).

# %%
import argparse
import os
import sys
from pathlib import Path


def _find_package_root():
    """The folder holding the attnscope package when it is not installed (this repository)."""
    starts = [Path.cwd()] + ([Path(__file__).resolve().parent] if "__file__" in globals() else [])
    for start in starts:
        for folder in [start, *start.parents]:
            for candidate in (folder, folder / "client" / "python"):
                if (candidate / "attnscope" / "__init__.py").is_file():
                    return candidate
    return None


try:
    import attnscope
except ImportError:
    sys.path.insert(0, str(_find_package_root()))
    import attnscope
from attnscope import plot, study

REPO = _find_package_root().parents[1] if _find_package_root() else Path.cwd()
IN_NOTEBOOK = "ipykernel" in sys.modules
parser = argparse.ArgumentParser(description="Attention head analysis of one financial statement")
parser.add_argument("--server", default=os.environ.get("ATTNSCOPE_SERVER", "127.0.0.1:50051"))
parser.add_argument("--out", default=os.environ.get("ATTNSCOPE_OUT", "attention_figures"))
parser.add_argument("--data", default=str(REPO / "config" / "sample_data" / "financial_statements.json"))
parser.add_argument("--prompts", default=str(REPO / "config" / "prompts.yaml"))
parser.add_argument("--prompt", default="prompt_1")
parser.add_argument("--company", default=None, help="company id (default: the first)")
parser.add_argument("--year", default=None, help="fiscal year (default: the company's first)")
parser.add_argument("--max-new-tokens", type=int, default=int(os.environ.get("ATTNSCOPE_MAX_NEW_TOKENS", "24")))
parser.add_argument("--token", default=os.environ.get("ATTNSCOPE_TOKEN"))
args = parser.parse_args([] if IN_NOTEBOOK else sys.argv[1:])
out_dir = Path(args.out)
out_dir.mkdir(parents=True, exist_ok=True)
written = []


def show(figure, name):
    """Saves the figure as <out>/<name>.png and shows it when running in a notebook."""
    path = out_dir / f"{name}.png"
    figure.savefig(path, dpi=figure.dpi)
    written.append(path)
    if IN_NOTEBOOK:
        from IPython.display import Image, display
        display(Image(filename=str(path)))
    print(f"wrote {path}")

# %% [markdown]
# ## Data and prompt
# The dataset maps company -> fiscal year -> {description, label}; `prompt_1` templates take
# the statement as `{balance_income_sheet}`.

# %%
data = study.load_dataset(args.data)
prompts = study.load_prompts(args.prompts)
company = args.company or sorted(data)[0]
year = args.year or sorted(data[company])[0]
entry = data[company][year]
messages = study.build_messages(prompts, args.prompt, entry["description"])
print(f"{company} / {year}: label = {entry['label']}")
print(entry["description"][:400], "...")

# %% [markdown]
# ## The model and the rendered chat
# `messages=` lets the server render the model's own chat template.

# %%
client = attnscope.Client(args.server, token=args.token)
info = client.model_info()
model = info["model"]
print(f"model {model['name']} ({model['architecture']}): {model['num_layers']} layers, "
      f"{model['num_attention_heads']} heads, vocab {model['vocab_size']}, device {model['device']}")
rendered = client.tokenize(messages=messages)
print(f"prompt: {len(rendered.ids)} tokens")
print(rendered.text[:300], "...")

# %% [markdown]
# ## Generate with attention capture
# The figures need the first, middle and last layers; capturing only those keeps the transfer
# small on large models (every layer of a 28-layer model at 1,500 tokens is gigabytes).

# %%
num_layers = model["num_layers"]
first_layer, middle_layer, last_layer = 0, num_layers // 2, num_layers - 1
capture = client.generate(messages=messages, max_new_tokens=args.max_new_tokens, greedy=True,
                          layers=sorted({first_layer, middle_layer, last_layer}))
prediction = study.parse_prediction(capture.generated_text)
print(f"generated ({capture.stop_reason}): {capture.generated_text!r}")
print(f"prediction: {prediction}  label: {entry['label']}")
print(capture)
capture.save(out_dir / "capture.safetensors")
written.append(out_dir / "capture.safetensors")

# %% [markdown]
# ## Per-layer statistics
# AnalyzeHeads reduces every layer inside the server (no matrices travel); the same numbers
# for the captured layers, computed here from the arrays, agree with them.

# %%
import numpy as np

report = client.analyze(messages=messages, max_new_tokens=args.max_new_tokens, greedy=True,
                        queries=["sales", "increase"])
print(f"{'layer':>5} {'heads':>5} {'tokens':>6} {'mean':>9} {'max':>7} {'entropy':>8}")
for stats in report.layer_stats:
    print(f"{stats['layer']:>5} {stats['num_heads']:>5} {stats['seq_length']:>6} {stats['mean_attention']:>9.5f} "
          f"{stats['max_attention']:>7.4f} {stats['attention_entropy']:>8.4f}")
for layer in capture.layers:
    attention = capture.attention(layer)
    safe = np.where(attention > 0, attention, 1.0)
    entropy = float(-(attention * np.log(safe)).sum(-1).mean())
    print(f"captured layer {layer}: {attention.shape}, mean {attention.mean():.5f}, max {attention.max():.4f}, "
          f"entropy {entropy:.4f}")

# %% [markdown]
# ## Heatmaps: layer 0 and the middle layer

# %%
show(plot.heatmap(capture, first_layer, capture.heads[0], max_tokens=40), f"heatmap_L{first_layer}_H{capture.heads[0]}")
show(plot.heatmap(capture, middle_layer, capture.heads[0], max_tokens=40,
                  start=max(0, capture.num_tokens - 40)), f"heatmap_L{middle_layer}_H{capture.heads[0]}_last40")

# %% [markdown]
# ## Head grid of the middle layer (last 30 tokens)

# %%
show(plot.head_grid(capture, middle_layer, last=30), f"head_grid_L{middle_layer}")

# %% [markdown]
# ## Financial terms and the attention generated tokens pay to them
# The server finds the terms (words of the rendered prompt) and reduces the attention of the
# generated rows to their positions.

# %%
for match in report.terms()[:15]:
    print(f"  {match['term']:<12} word {match['word']!r:<16} positions {match['positions'][:6]}")
term_rows = sorted(report.term_attention(), key=lambda e: -e["mean"])
for entry_ in term_rows[:5]:
    tops = ", ".join(f"{t['term']} {t['mass']:.3f}" for t in entry_["top_terms"][:3])
    print(f"  layer {entry_['layer']} head {entry_['head']}: mean {entry_['mean']:.4f} max {entry_['max']:.4f} ({tops})")
captured_rows = [e for e in term_rows if e["layer"] in capture.layers]  # the plot needs the matrix
best = captured_rows[0] if captured_rows else {"layer": middle_layer, "head": capture.heads[0]}
show(plot.term_attention(capture, report, best["layer"], best["head"]),
     f"term_attention_L{best['layer']}_H{best['head']}")

# %% [markdown]
# ## Head specialisation: first, middle and last layers

# %%
for layer in sorted({first_layer, middle_layer, last_layer}):
    print(report.specialization_table(layer))
    print()
show(plot.layer_head_map(report, "type"), "head_types")
show(plot.layer_head_map(report, "entropy"), "head_entropy")
show(plot.layer_head_map(report, "gen_sink" if report.rows and report.rows[0]["gen_sink"] is not None else "sink"),
     "head_sink")

# %% [markdown]
# ## Top-k keys for "sales" and "increase"

# %%
for query in ("sales", "increase"):
    for item in report.top_k(query=query)[:2]:
        keys = ", ".join(f"{k['position']}:{k['token']!r} {k['weight']:.3f}" for k in item["keys"][:5])
        print(f"  {query!r} at {item['query_position']} (layer {item['layer']}, head {item['head']}): {keys}")
    show(plot.top_k_bar(capture, query, middle_layer, k=10), f"top_k_{query}_L{middle_layer}")

# %% [markdown]
# ## Files written

# %%
client.close()
for path in written:
    print(path)
