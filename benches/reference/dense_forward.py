#!/usr/bin/env python3
"""Time the dense forward pass (input ids -> logits) of a Hugging Face Llama directory with PyTorch.

For each batch x seq shape: random token ids (fixed seed), `model(input_ids, attention_mask=ones,
use_cache=False).logits` under torch.no_grad(), --warmup untimed runs, then --repeats timed runs.
Reports the median (and min/max) seconds and tokens/s = batch*seq/median, with the thread count, the
library versions and the peak RSS. This is the unit of work of the reference search: one candidate
evaluation is one such forward over the calibration set.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from refcommon import CpuMeter, Timer, environment, load_llama, model_info, peak_rss_mib, set_threads, write_json  # noqa: E402


def parse_shape(s: str) -> tuple[int, int]:
    b, t = s.lower().split("x")
    return int(b), int(t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="Hugging Face Llama directory (config.json + *.safetensors)")
    ap.add_argument("--shapes", default="4x128,10x256", help="comma-separated BATCHxSEQ (default 4x128,10x256)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-hash", action="store_true", help="do not SHA-256 the weight files")
    ap.add_argument("--out", help="result JSON (default: print to stdout)")
    args = ap.parse_args()

    threads = set_threads(args.threads)
    with Timer() as t_load:
        model = load_llama(args.model, args.attn)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(args.seed)

    runs = []
    for shape in args.shapes.split(","):
        b, t = parse_shape(shape)
        ids = torch.randint(0, vocab, (b, t), generator=gen)
        mask = torch.ones_like(ids)
        times = []
        with torch.no_grad(), CpuMeter() as meter:
            for i in range(args.warmup + args.repeats):
                t0 = time.perf_counter()
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                dt = time.perf_counter() - t0
                assert logits.shape == (b, t, vocab)
                del logits
                if i >= args.warmup:
                    times.append(dt)
        med = statistics.median(times)
        run = {
            "batch": b,
            "seq_len": t,
            "tokens": b * t,
            "median_s": med,
            "min_s": min(times),
            "max_s": max(times),
            "tokens_per_s": b * t / med,
            "times_s": times,
            "other_cpu_cores": meter.other_cores,
        }
        runs.append(run)
        print(f"{b}x{t}: median {med:.4f}s (min {min(times):.4f}, max {max(times):.4f}) "
              f"= {b * t / med:.0f} tokens/s, {threads} threads; other processes used "
              f"{meter.other_cores if meter.other_cores is not None else float('nan'):.2f} cores", file=sys.stderr, flush=True)

    result = {
        "tool": "finercut-rs benches/reference/dense_forward.py (PyTorch reference)",
        "model": model_info(args.model, model, hash_weights=not args.no_hash),
        "settings": {
            "attn_implementation": model.config._attn_implementation,
            "dtype": "float32",
            "warmup": args.warmup,
            "repeats": args.repeats,
            "seed": args.seed,
        },
        "environment": environment(threads),
        "load_s": t_load.s,
        "runs": runs,
        "peak_rss_mib": peak_rss_mib(),
    }
    if args.out:
        write_json(args.out, result)
    else:
        import json

        json.dump(result, sys.stdout, indent=1)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
