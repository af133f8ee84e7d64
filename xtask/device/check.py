#!/usr/bin/env python3
"""Bookkeeping and comparisons of the finercut device check (run.sh); standard library only.

results.json is rewritten (atomically) after every stage, so a run cut short still returns what it
measured. The comparisons read the CPU side, computed where the check was prepared
(`cargo xtask device-check`, expected/), and the GPU side written by the stage; each prints one
JSON object of checks and exits 1 when a check fails.

Subcommands:
  init RESULTS --deadline S --dry-run 0|1      a fresh results.json
  record RESULTS NAME STATUS RC WALL_S [--checks FILE] [--detail TEXT]
  logprobs CPU.json GPU.json --tol T            finercut run --json outputs (last position)
  order CPU.json GPU.json --score-tol T         finercut prune results: removal order and scores
  torch TORCH.json FINERCUT_RUN.json FINERCUT_PRUNE.json --tol T --score-tol T
  timing ...                                    see timing()
  dry-torch FINERCUT_RUN.json FINERCUT_PRUNE.json --precision P   a dry run's PyTorch stand-in
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time


def load(path):
    with open(path) as f:
        return json.load(f)


def write_atomic(path, value):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def init(args):
    write_atomic(args.results, {
        "schema": 1,
        "dry_run": bool(args.dry_run),
        "deadline_s": args.deadline,
        "started_unix": int(time.time()),
        "stages": [],
        "verdict": "incomplete",
    })


def record(args):
    res = load(args.results)
    entry = {"name": args.name, "status": args.status, "rc": args.rc, "wall_s": round(args.wall_s, 2)}
    if args.detail:
        entry["detail"] = args.detail
    for path in args.checks or []:
        # checks/<stage>.<key>.json
        key = os.path.basename(path).split(".")[-2]
        try:
            entry.setdefault("checks", {})[key] = load(path)
        except (OSError, ValueError) as e:
            entry.setdefault("checks", {})[key] = {"error": f"unreadable checks file: {e}"}
    res["stages"] = [s for s in res["stages"] if s["name"] != args.name] + [entry]
    statuses = [s["status"] for s in res["stages"]]
    res["verdict"] = ("failed" if "failed" in statuses or "timeout" in statuses
                      else "passed" if statuses and all(s == "passed" for s in statuses)
                      else "partial")
    res["elapsed_s"] = int(time.time()) - res["started_unix"]
    write_atomic(args.results, res)


def unit_index(unit):
    """Sublayer index of a finercut unit name (`L3.attn` is 6, `L3.mlp` 7)."""
    block, kind = unit[1:].split(".")
    return 2 * int(block) + (0 if kind == "attn" else 1)


def max_rel(a, b):
    """max |a - b| / max |b|."""
    if len(a) != len(b):
        return math.inf
    scale = max((abs(y) for y in b), default=0.0) or 1.0
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0) / scale


def finish(checks):
    print(json.dumps(checks, indent=1))
    sys.exit(0 if checks.get("ok") else 1)


def logprobs(args):
    cpu, gpu = load(args.cpu), load(args.gpu)
    rel = max_rel(gpu["logprobs"], cpu["logprobs"])
    top_cpu = max(range(len(cpu["logprobs"])), key=lambda i: cpu["logprobs"][i])
    top_gpu = max(range(len(gpu["logprobs"])), key=lambda i: gpu["logprobs"][i])
    finish({
        "what": "next-token log-probabilities of the last position, GPU against CPU",
        "same_ids": cpu["ids"] == gpu["ids"],
        "max_rel_diff": rel,
        "tolerance": args.tol,
        "same_top_token": top_cpu == top_gpu,
        "ok": cpu["ids"] == gpu["ids"] and rel <= args.tol and top_cpu == top_gpu,
    })


def steps_of(path):
    return load(path).get("steps", [])


def order(args):
    cpu, gpu = steps_of(args.cpu), steps_of(args.gpu)
    o_cpu, o_gpu = [s["unit"] for s in cpu], [s["unit"] for s in gpu]
    diffs = [abs(a["score"] - b["score"]) / max(abs(b["score"]), 1e-30) for a, b in zip(gpu, cpu)]
    worst = max(diffs, default=0.0)
    finish({
        "what": "greedy removal order and scores of the removed units, GPU against CPU",
        "order_cpu": o_cpu,
        "order_gpu": o_gpu,
        "same_order": o_cpu == o_gpu and len(o_cpu) > 0,
        "max_rel_score_diff": worst,
        "score_tolerance": args.score_tol,
        "ok": o_cpu == o_gpu and len(o_cpu) > 0 and worst <= args.score_tol,
    })


def torch_parity(args):
    """PyTorch (same precision as finercut) against finercut on the GPU: the last position's
    log-probabilities within `tol` (relative to the largest magnitude), and the first greedy step's
    choice equal, unless PyTorch's best two scores are within `score_tol` of each other (a tie at
    this precision, reported as such)."""
    t = load(args.torch)
    run = load(args.finercut_run)
    steps = steps_of(args.finercut_prune)
    rel = max_rel(t["logprobs"], run["logprobs"])
    scores = t["scores"]
    ranked = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    choice_f = unit_index(steps[0]["unit"]) if steps else None
    gap = (scores[ranked[1]] - scores[ranked[0]]) / max(abs(scores[ranked[0]]), 1e-30) if len(ranked) > 1 else math.inf
    same = choice_f == ranked[0]
    tie = not same and gap <= args.score_tol
    score_f = steps[0]["score"] if steps else None
    score_t = scores[choice_f] if choice_f is not None and choice_f < len(scores) else None
    score_rel = abs(score_f - score_t) / max(abs(score_t), 1e-30) if score_t is not None else math.inf
    finish({
        "what": f"PyTorch ({t.get('precision')}) against finercut on the GPU",
        "same_ids": t.get("ids") == run["ids"],
        "logprobs_max_rel_diff": rel,
        "tolerance": args.tol,
        "choice_torch": ranked[0],
        "choice_finercut": choice_f,
        "same_choice": same,
        "tie_within_score_tolerance": tie,
        "torch_best_two_rel_gap": gap,
        "chosen_score_rel_diff": score_rel,
        "score_tolerance": args.score_tol,
        "ok": t.get("ids") == run["ids"] and rel <= args.tol and (same or tie) and score_rel <= args.score_tol,
    })


def timing(args):
    """One greedy step on the Llama-3-8B shape: finercut (elimination and exhaustive) and the
    PyTorch reference procedure in bf16; GEMM TFLOP/s of the finercut step as a lower bound."""
    d, ffn, blocks, kvd, vocab = 4096, 14336, 32, 1024, 128256
    tokens = args.samples * args.seq_len
    per_block = d * d * 2 + 2 * d * kvd + 3 * d * ffn
    out = {"what": "one greedy step, Llama-3-8B shape, bf16 weights", "samples": args.samples,
           "seq_len": args.seq_len}
    for name, path in (("finercut", args.elimination), ("finercut_exhaustive", args.exhaustive)):
        if not path or not os.path.exists(path):
            continue
        try:
            steps = steps_of(path)
        except ValueError:
            continue
        if not steps:
            continue
        s = steps[0]
        fe, wall = s["forward_equivalents"], s["wall_s"]
        elim = s.get("elimination")
        rows = elim["rows_scored"] if elim else s["candidates"] * tokens
        flops = fe * 2 * tokens * blocks * per_block + 2 * rows * vocab * d
        out[name] = {"step_s": wall, "forward_equivalents": fe, "unit": s["unit"], "score": s["score"],
                     "gemm_tflop": flops / 1e12, "tflops_lower_bound": flops / wall / 1e12}
    if args.torch and os.path.exists(args.torch):
        try:
            out["torch_bf16"] = load(args.torch)
        except ValueError:
            out["torch_bf16"] = {"error": "unreadable"}
    f, t = out.get("finercut", {}), out.get("torch_bf16", {})
    if "step_s" in f and t.get("step_s"):
        out["speedup"] = min(t["step_s"]) / f["step_s"]
        if "choice" in t:
            out["same_choice_as_torch_bf16"] = unit_index(f["unit"]) == t["choice"]
    out["ok"] = "step_s" in f
    finish(out)


def dry_torch(args):
    """A dry run's stand-in for torch_step.py: finercut's own log-probabilities and a score list
    whose best entry is finercut's first choice."""
    run, steps = load(args.finercut_run), steps_of(args.finercut_prune)
    n = 2 * max((unit_index(s["unit"]) // 2 for s in steps), default=0) + 2
    best = unit_index(steps[0]["unit"]) if steps else 0
    score = steps[0]["score"] if steps else 0.0
    scores = [score * 2 + 1.0 + i for i in range(n)]
    scores[best] = score
    print(json.dumps({"precision": args.precision, "dry_run": True, "ids": run["ids"],
                      "logprobs": run["logprobs"], "scores": scores, "choice": best,
                      "score": score, "step_s": [0.0]}))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("init")
    p.add_argument("results")
    p.add_argument("--deadline", type=int, required=True)
    p.add_argument("--dry-run", type=int, default=0)
    p.set_defaults(fn=init)
    p = sub.add_parser("record")
    for a in ("results", "name", "status"):
        p.add_argument(a)
    p.add_argument("rc", type=int)
    p.add_argument("wall_s", type=float)
    p.add_argument("--checks", action="append")
    p.add_argument("--detail")
    p.set_defaults(fn=record)
    p = sub.add_parser("logprobs")
    p.add_argument("cpu")
    p.add_argument("gpu")
    p.add_argument("--tol", type=float, required=True)
    p.set_defaults(fn=logprobs)
    p = sub.add_parser("order")
    p.add_argument("cpu")
    p.add_argument("gpu")
    p.add_argument("--score-tol", type=float, required=True)
    p.set_defaults(fn=order)
    p = sub.add_parser("torch")
    p.add_argument("torch")
    p.add_argument("finercut_run")
    p.add_argument("finercut_prune")
    p.add_argument("--tol", type=float, required=True)
    p.add_argument("--score-tol", type=float, required=True)
    p.set_defaults(fn=torch_parity)
    p = sub.add_parser("dry-torch")
    p.add_argument("finercut_run")
    p.add_argument("finercut_prune")
    p.add_argument("--precision", required=True)
    p.set_defaults(fn=dry_torch)
    p = sub.add_parser("timing")
    p.add_argument("--elimination")
    p.add_argument("--exhaustive")
    p.add_argument("--torch")
    p.add_argument("--samples", type=int, required=True)
    p.add_argument("--seq-len", type=int, required=True)
    p.set_defaults(fn=timing)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
