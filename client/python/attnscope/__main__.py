"""Command line of the Python client: `python3 -m attnscope batch ...`, `... sample-data ...`."""

from __future__ import annotations

import argparse
import json
import sys


def _int_list(text: str):
    return [int(x) for x in text.split(",") if x.strip()] if text else []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="attnscope", description="attnscope Python client")
    commands = parser.add_subparsers(dest="command", required=True)

    batch = commands.add_parser("batch", help="AnalyzeHeads over a dataset; per-head CSV and summary")
    batch.add_argument("--server", required=True,
                       help="host:port of attnscope-server; several replicas comma-separated")
    batch.add_argument("--data", required=True, help="dataset JSON {company: {year: {description, label}}}")
    batch.add_argument("--prompts", required=True, help="prompts YAML (config/prompts.yaml)")
    batch.add_argument("--prompt", default="prompt_1", help="template list key in the prompts file")
    batch.add_argument("--template", type=int, default=0, help="index of the template in that list")
    batch.add_argument("--out", required=True, help="output folder (re-running resumes)")
    batch.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    batch.add_argument("--max-new-tokens", type=int, default=16)
    batch.add_argument("--layers", default="", help="comma list, negatives from the end; default all")
    batch.add_argument("--heads", default="", help="comma list; default all")
    batch.add_argument("--limit", type=int, default=None, help="only the first N items")
    batch.add_argument("--token", default=None, help="API key")
    batch.add_argument("--request-timeout", type=float, default=None,
                       help="seconds per request; an item that takes longer is recorded as failed")
    batch.add_argument("--candidates", default="",
                       help="comma list of two answers (e.g. 'increase,decrease'): record each item's logit difference")
    batch.add_argument("--sweep-first", type=int, default=0,
                       help="also sweep every head (single-head ablation) of the first N items; needs --candidates")
    batch.add_argument("--sweep-mode", choices=["zero", "mean"], default="zero")
    batch.add_argument("--no-progress", action="store_true")

    sample = commands.add_parser("sample-data", help="write the synthetic financial statements dataset")
    sample.add_argument("--out", required=True)

    args = parser.parse_args(argv)
    if args.command == "sample-data":
        from attnscope import sample_data
        return sample_data.main(["--out", args.out])

    from attnscope.batch import run_batch
    from attnscope.errors import AttnScopeError
    try:
        result = run_batch(args.server, args.data, args.prompts, args.prompt, args.out,
                           concurrency=args.concurrency, max_new_tokens=args.max_new_tokens,
                           template_index=args.template, layers=_int_list(args.layers),
                           heads=_int_list(args.heads), limit=args.limit, token=args.token,
                           progress=not args.no_progress, request_timeout=args.request_timeout,
                           candidates=[c for c in args.candidates.split(",") if c] or None,
                           sweep_first=args.sweep_first, sweep_mode=args.sweep_mode)
    except (ValueError, OSError, AttnScopeError) as error:
        print(f"attnscope batch: {error}", file=sys.stderr)
        return 1
    counts = result["counts"]
    print(json.dumps(counts))
    return 0 if counts["failed"] == 0 else 2


if __name__ == "__main__":
    raise SystemExit(main())
