#!/usr/bin/env python3
"""Check a Hugging Face SmolLM2-135M directory against the golden outputs in data/golden/.

For each golden prompt: the tokenizer's ids (no special tokens) must equal the golden ids; then the dense
float32 logits of the golden ids are compared position by position: the golden top-10 logits (at the
golden top-10 ids) and the log-sum-exp, and for prompt 1 all 49,152 logits at the last position
(smollm2_prompt1_last_logits.npy). Also compares the first 2048 ids of the WikiText-2 test text
(crates/eval/data/wikitext-2-raw/wiki.test.raw, or --text). Exits 1 if any logit differs by more than --tol
(default 1e-3; sdpa vs eager differ by ~1.4e-4).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from refcommon import load_llama, set_threads  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
DEFAULT_GOLDEN = os.path.join(REPO, "data", "golden")
DEFAULT_TEXT = os.path.join(REPO, "crates", "eval", "data", "wikitext-2-raw", "wiki.test.raw")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model", help="HF Llama directory converted from SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--golden", default=DEFAULT_GOLDEN, help=f"golden directory (default {DEFAULT_GOLDEN})")
    ap.add_argument("--text", default=DEFAULT_TEXT, help=f"WikiText-2 raw test file (default {DEFAULT_TEXT})")
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args()

    set_threads(args.threads)
    from transformers import AutoTokenizer

    model = load_llama(args.model, args.attn)
    tok = AutoTokenizer.from_pretrained(args.model)
    with open(os.path.join(args.golden, "smollm2_logits_prompts.json")) as f:
        golden = json.load(f)
    with open(os.path.join(args.golden, "smollm2_tokens.json")) as f:
        golden_tokens = json.load(f)

    ok = True
    worst = 0.0
    for p in golden["prompts"]:
        ids = tok(p["text"], add_special_tokens=False)["input_ids"]
        gids = [pos["input_id"] for pos in p["positions"]]
        same = ids == gids
        ok &= same
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([gids]), use_cache=False).logits[0].double()
        d_top = d_lse = 0.0
        argmax_ok = True
        for pos in p["positions"]:
            row = logits[pos["pos"]]
            got = row[pos["top10_ids"]].numpy()
            d_top = max(d_top, float(np.abs(got - np.array(pos["top10_logits"])).max()))
            d_lse = max(d_lse, abs(torch.logsumexp(row, 0).item() - pos["logsumexp"]))
            argmax_ok &= int(row.argmax()) == pos["top10_ids"][0]
        worst = max(worst, d_top, d_lse)
        print(f"{p['name']}: {len(gids)} tokens, ids {'match' if same else 'DIFFER'}, "
              f"max |top-10 logit diff| {d_top:.2e}, max |logsumexp diff| {d_lse:.2e}, "
              f"argmax {'matches' if argmax_ok else 'DIFFERS'}")
        if p["name"] == "prompt1":
            npy = os.path.join(args.golden, "smollm2_prompt1_last_logits.npy")
            if os.path.exists(npy):
                full = np.load(npy).astype(np.float64)
                d_full = float(np.abs(logits[-1].numpy() - full).max())
                worst = max(worst, d_full)
                print(f"prompt1: last position, all {full.size} logits: max |diff| {d_full:.2e}")

    wiki = golden_tokens.get("wiki", {})
    if wiki.get("first_2048_ids"):
        with open(args.text, encoding="utf-8", newline="") as f:
            text = f.read()
        ids = tok(text, add_special_tokens=False)["input_ids"]
        first = wiki["first_2048_ids"]
        same = ids[: len(first)] == first
        ok &= same
        print(f"wiki.test.raw: {len(ids)} tokens (golden, transformers: {wiki.get('n_tokens_transformers_gguf')}), "
              f"first {len(first)} ids {'match' if same else 'DIFFER'}")

    ok &= worst <= args.tol
    print(f"{'PASS' if ok else 'FAIL'}: worst logit difference {worst:.2e} (tolerance {args.tol:g}, attn {args.attn})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
