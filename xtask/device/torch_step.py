#!/usr/bin/env python3
"""One greedy FinerCut step the reference way, on the GPU with PyTorch + transformers.

As benches/reference/reference_search.py (github.com/YaNgZhAnG-V5/llm_dissect's procedure): dense
logits once; then for every attention and MLP sublayer a forward hook zeroes the output of its
o_proj / down_proj and the whole model runs on the calibration set; the score is the Jensen-Shannon
divergence to the dense logits. Differences, to give the reference its best case on a GPU: the
model is in bfloat16 with sdpa attention, all sequences go in one batch, and the divergence runs on
the GPU. Prints one JSON object (wall times, peak memory).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch


def js(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    lp = torch.log_softmax(p_logits.float(), -1)
    lq = torch.log_softmax(q_logits.float(), -1)
    lm = torch.logsumexp(torch.stack([lp, lq]), 0) - math.log(2)
    v = 0.5 * ((lp.exp() * (lp - lm)).sum(-1) + (lq.exp() * (lq - lm)).sum(-1))
    return float(v.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--tokens", required=True, help="JSON list of equally long lists of ids")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.bfloat16, attn_implementation="sdpa"
    ).cuda().eval()
    torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    with open(args.tokens) as f:
        ids = torch.tensor(json.load(f), device="cuda")
    targets = []
    for layer in model.model.layers:
        targets += [layer.self_attn.o_proj, layer.mlp.down_proj]
    rounds = []
    with torch.no_grad():
        for _ in range(args.rounds):
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            dense = model(input_ids=ids, use_cache=False).logits
            scores = []
            for mod in targets:
                h = mod.register_forward_hook(lambda m, i, o: o * 0)
                logits = model(input_ids=ids, use_cache=False).logits
                h.remove()
                scores.append(js(dense, logits))
                del logits
            torch.cuda.synchronize()
            rounds.append(time.perf_counter() - t0)
    best = min(range(len(scores)), key=lambda i: (scores[i], i))
    print(json.dumps({
        "load_s": load_s,
        "step_s": rounds,
        "choice": best,
        "score": scores[best],
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0),
    }))


if __name__ == "__main__":
    main()
