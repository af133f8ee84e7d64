#!/usr/bin/env python3
"""One greedy FinerCut step the reference way, on the GPU with PyTorch + transformers.

As benches/reference/reference_search.py (github.com/YaNgZhAnG-V5/llm_dissect's procedure): dense
logits once; then for every attention and MLP sublayer a forward hook zeroes the output of its
o_proj / down_proj and the whole model runs on the calibration set; the score is the Jensen-Shannon
divergence (natural log) to the dense logits, averaged over every position. Prints one JSON object.

--precision says how the model computes:
  f32            float32 weights and activations, TF32 off (finercut --precision f32);
  bf16-emulated  float32 activations, weight matrices (every nn.Linear and the embedding) rounded to
                 bfloat16, and the input of every nn.Linear rounded to bfloat16 before an f32 GEMM
                 (finercut --precision bf16: bf16 GEMM inputs, f32 accumulation and output);
  bf16           the model in bfloat16 with sdpa attention (the reference's best case on a GPU; for
                 timing, not for comparing numbers).
--ids gives a prompt's token ids: the next-token log-probabilities of its last position are
printed too (to compare with `finercut run --json`).
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def js_rows(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    lp = torch.log_softmax(p_logits.double(), -1)
    lq = torch.log_softmax(q_logits.double(), -1)
    lm = torch.logsumexp(torch.stack([lp, lq]), 0) - torch.log(torch.tensor(2.0, dtype=torch.float64))
    v = 0.5 * ((lp.exp() * (lp - lm)).sum(-1) + (lq.exp() * (lq - lm)).sum(-1))
    return v.clamp(0.0, float(torch.log(torch.tensor(2.0))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--tokens", required=True, help="JSON list of equally long lists of ids")
    ap.add_argument("--precision", choices=["f32", "bf16-emulated", "bf16"], default="bf16")
    ap.add_argument("--ids", help="JSON file with {\"ids\": [...]}: also print that prompt's log-probabilities")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    t0 = time.perf_counter()
    if args.precision == "bf16":
        model = AutoModelForCausalLM.from_pretrained(
            args.model, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    else:
        model = AutoModelForCausalLM.from_pretrained(
            args.model, dtype=torch.float32, attn_implementation="eager").cuda().eval()
    if args.precision == "bf16-emulated":
        with torch.no_grad():
            for mod in model.modules():
                if isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)):
                    mod.weight.copy_(mod.weight.bfloat16().float())
                if isinstance(mod, torch.nn.Linear):
                    mod.register_forward_pre_hook(lambda m, a: (a[0].bfloat16().float(),) + tuple(a[1:]))
    torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    with open(args.tokens) as f:
        ids = torch.tensor(json.load(f), device="cuda")
    targets = []
    for layer in model.model.layers:
        targets += [layer.self_attn.o_proj, layer.mlp.down_proj]
    out = {"precision": args.precision, "load_s": load_s, "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name(0)}
    rounds = []
    with torch.no_grad():
        if args.ids:
            with open(args.ids) as f:
                prompt = json.load(f)["ids"]
            logits = model(input_ids=torch.tensor([prompt], device="cuda"), use_cache=False).logits
            out["ids"] = prompt
            out["logprobs"] = torch.log_softmax(logits[0, -1].double(), -1).tolist()
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
                scores.append(float(js_rows(dense, logits).mean()))
                del logits
            torch.cuda.synchronize()
            rounds.append(time.perf_counter() - t0)
    best = min(range(len(scores)), key=lambda i: (scores[i], i))
    out.update({
        "step_s": rounds,
        "choice": best,
        "score": scores[best],
        "scores": scores,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    })
    print(json.dumps(out))


if __name__ == "__main__":
    main()
