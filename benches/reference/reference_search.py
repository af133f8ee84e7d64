#!/usr/bin/env python3
"""FinerCut greedy sublayer search, done the way the reference code does it (PyTorch + transformers).

Mirrors github.com/YaNgZhAnG-V5/llm_dissect, scripts/prune_layer.py with `--prune loss -lv am` and the
`Output` evaluator (dissect/evaluators/output.py) used by its configs:

* candidates: every attention (`self_attn.o_proj`) and MLP (`mlp.down_proj`) sublayer
  (`get_target_layers(model, ["o_proj", "down_proj"], exclude)`);
* removal = a forward hook on that projection that multiplies its output by a zero mask
  (`MaskingHook`, registered by `ForwardPrunerTestingManager.prepare_environment_mask_hook`): the branch
  still computes, its contribution to the residual stream becomes 0;
* every step, every remaining candidate is evaluated with `removed + [candidate]` hooked, by a full
  forward over the whole calibration set (`greedy_pruning`), and scored against the dense model's
  logits collected once up front (`Output.collect_output_data`);
* the candidate with the smallest score is removed (`overall_performance.index(min(...))`).

Sublayer index = 2*block + (0 for attention, 1 for MLP); names L{block}.attn / L{block}.mlp.
Ties go to the lowest sublayer index (--tie-order index, default) or, as in the reference, to the first
candidate in its list order, which is the module names sorted as strings, with front-excluded blocks
appended when they are let in (--tie-order reference).

Output: JSON with every step's choice, score, all candidate scores and wall time, rewritten after each
step (a checkpoint); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import warnings  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# kl_div(reduction="mean") warns that it divides by N*T*V: that division is what the reference computes.
warnings.filterwarnings("ignore", message=r"reduction: 'mean' divides the total loss")

from refcommon import CpuMeter, Timer, environment, load_llama, model_info, peak_rss_mib, set_threads, write_json  # noqa: E402

# ------------------------------------------------------------------------------------------------
# metrics: dense logits D and pruned logits Q, both [N, T, V] float32 (as the reference has them)
# ------------------------------------------------------------------------------------------------


def js_reference(dense: torch.Tensor, pruned: torch.Tensor) -> float:
    """Output.compare_outputs_js_divergence, verbatim: with kl_div(input, target) = target*(log target -
    input) and reduction="mean" this is 0.5*[KL(M||P) + KL(M||Q)] / (N*T*V), M = (P+Q)/2."""
    mean_prob = 0.5 * (F.softmax(dense, dim=-1) + F.softmax(pruned, dim=-1))
    js = 0.5 * (
        F.kl_div(F.log_softmax(dense, dim=-1), mean_prob, reduction="mean")
        + F.kl_div(F.log_softmax(pruned, dim=-1), mean_prob, reduction="mean")
    )
    return js.item()


def kl_reference(dense: torch.Tensor, pruned: torch.Tensor) -> float:
    """Output.compare_outputs_kl_divergence, verbatim: KL(Q||P) / (N*T*V) (pruned || dense)."""
    return F.kl_div(F.log_softmax(dense, dim=-1), F.softmax(pruned, dim=-1), reduction="mean").item()


def angular_reference(dense: torch.Tensor, pruned: torch.Tensor) -> float:
    """Output.compare_outputs_angular_distance: mean over tokens of acos(clamp(cos, 0, 1))."""
    cos = torch.clamp(F.cosine_similarity(dense, pruned, dim=-1), 0.0, 1.0)
    return torch.acos(cos).mean().item()


def norm_reference(dense: torch.Tensor, pruned: torch.Tensor) -> float:
    """Output.compare_outputs_norm: Frobenius norm of each sequence's [T, V] logit difference, averaged."""
    return torch.linalg.matrix_norm(dense - pruned).mean().item()


def js_textbook(dense: torch.Tensor, pruned: torch.Tensor) -> float:
    """Jensen-Shannon divergence (nats) of the next-token distributions, 0.5*[KL(P||M) + KL(Q||M)]
    summed over the vocabulary, averaged over all N*T token positions; computed in float64."""
    total = 0.0
    for i in range(dense.shape[0]):  # one sequence at a time: float64 [T, V] temporaries
        lp = F.log_softmax(dense[i].double(), dim=-1)
        lq = F.log_softmax(pruned[i].double(), dim=-1)
        lm = torch.logaddexp(lp, lq) - math.log(2.0)
        js = 0.5 * (torch.exp(lp) * (lp - lm) + torch.exp(lq) * (lq - lm)).sum(dim=-1)
        total += js.sum().item()
    return total / (dense.shape[0] * dense.shape[1])


def kl_textbook(dense: torch.Tensor, pruned: torch.Tensor) -> float:
    """KL(P||Q) (dense || pruned) in nats, summed over the vocabulary, averaged over tokens; float64."""
    total = 0.0
    for i in range(dense.shape[0]):
        lp = F.log_softmax(dense[i].double(), dim=-1)
        lq = F.log_softmax(pruned[i].double(), dim=-1)
        total += (torch.exp(lp) * (lp - lq)).sum().item()
    return total / (dense.shape[0] * dense.shape[1])


METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {
    "js-reference": js_reference,
    "js": js_textbook,
    "kl-reference": kl_reference,
    "kl": kl_textbook,
    "angular-reference": angular_reference,
    "norm-reference": norm_reference,
}

# ------------------------------------------------------------------------------------------------
# sublayers and masking hooks
# ------------------------------------------------------------------------------------------------


class MaskingHook:
    """dissect/models/masking_hook.py: forward hook returning `outputs * mask` (mask all zeros here)."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask.to(torch.float32)

    def __call__(self, module: torch.nn.Module, inputs: object, outputs: torch.Tensor) -> torch.Tensor:
        return outputs * self.mask


class Sublayer:
    def __init__(self, index: int, model: torch.nn.Module) -> None:
        self.index = index
        self.block, kind = divmod(index, 2)
        self.kind = "attn" if kind == 0 else "mlp"
        self.name = f"L{self.block}.{self.kind}"
        layer = model.model.layers[self.block]
        if self.kind == "attn":
            self.module_name = f"model.layers.{self.block}.self_attn.o_proj"
            self.module = layer.self_attn.o_proj
        else:
            self.module_name = f"model.layers.{self.block}.mlp.down_proj"
            self.module = layer.mlp.down_proj
        self.dim = self.module.out_features


def hooked(sublayers: list[Sublayer]) -> list[torch.utils.hooks.RemovableHandle]:
    return [s.module.register_forward_hook(MaskingHook(torch.zeros(s.dim, dtype=torch.bool))) for s in sublayers]


@torch.no_grad()
def run_logits(model: torch.nn.Module, ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits of every calibration sequence, concatenated like Output.collect_output_data / evaluate."""
    outs = []
    for i in range(0, ids.shape[0], batch_size):
        x = ids[i : i + batch_size]
        out = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False)
        outs.append(out.logits.detach())
    return torch.cat(outs, dim=0)


# ------------------------------------------------------------------------------------------------
# calibration data
# ------------------------------------------------------------------------------------------------


def calibration_ids(args: argparse.Namespace) -> tuple[torch.Tensor, dict]:
    if args.tokens:
        with open(args.tokens) as f:
            seqs = json.load(f)
        if isinstance(seqs, dict):
            seqs = seqs["ids"]
        if not seqs or len({len(s) for s in seqs}) != 1:
            raise SystemExit(f"{args.tokens}: need a non-empty list of equally long id lists")
        ids = torch.tensor(seqs, dtype=torch.long)
        info = {"source": os.path.abspath(args.tokens), "kind": "token ids (JSON)"}
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
        # the whole file as one string, CRLF kept (newline=""), no BOS/special tokens
        with open(args.text, encoding="utf-8", newline="") as f:
            text = f.read()
        all_ids = tok(text, add_special_tokens=False)["input_ids"]
        need = args.offset + args.samples * args.seq_len
        if need > len(all_ids):
            raise SystemExit(f"{args.text}: {len(all_ids)} tokens, need offset+samples*seq_len = {need}")
        ids = torch.tensor(all_ids[args.offset : need], dtype=torch.long).view(args.samples, args.seq_len)
        info = {
            "source": os.path.abspath(args.text),
            "kind": "text file, tokenized whole with add_special_tokens=False",
            "text_tokens": len(all_ids),
            "offset": args.offset,
        }
    info["samples"], info["seq_len"] = ids.shape
    info["ids_int32le_sha256"] = hashlib.sha256(ids.to(torch.int32).numpy().astype("<i4").tobytes()).hexdigest()
    return ids, info


# ------------------------------------------------------------------------------------------------
# the search
# ------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="Hugging Face Llama directory (config.json + *.safetensors [+ tokenizer])")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--tokens", help="JSON: list of equally long lists of token ids (or {'ids': [...]})")
    src.add_argument("--text", help="text file: tokenized whole, then --samples chunks of --seq-len from --offset")
    ap.add_argument("--tokenizer", help="tokenizer directory (default: the model directory)")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--offset", type=int, default=0, help="first token of the calibration slice")
    ap.add_argument("--save-tokens", help="write the calibration ids used (JSON list of lists) here")
    ap.add_argument("--metric", choices=sorted(METRICS), default="js-reference",
                    help="js-reference: the reference's js_divergence (default); js: textbook JS, float64")
    ap.add_argument("--steps", default="1", help="greedy steps to run, or 'all' (= 2 x blocks)")
    ap.add_argument("--batch-size", type=int, default=1, help="sequences per forward (reference: 1)")
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa",
                    help="transformers attn_implementation (default sdpa, the reference's default)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    ap.add_argument("--exclude", type=float, default=None,
                    help="reference's -x: front blocks held out until int(2L*x)+1 sublayers are removed (off)")
    ap.add_argument("--tie-order", choices=["index", "reference"], default="index")
    ap.add_argument("--no-hash", action="store_true", help="do not SHA-256 the weight files")
    ap.add_argument("--out", help="result JSON (rewritten after every step)")
    args = ap.parse_args()

    t_start = time.perf_counter()
    threads = set_threads(args.threads)
    with Timer() as t_load:
        model = load_llama(args.model, args.attn)
    with Timer() as t_tok:
        ids, calib = calibration_ids(args)
    if args.save_tokens:
        with open(args.save_tokens, "w") as f:
            json.dump(ids.tolist(), f)

    n_blocks = model.config.num_hidden_layers
    total = 2 * n_blocks
    steps = total if args.steps == "all" else min(int(args.steps), total)
    sub = [Sublayer(i, model) for i in range(total)]
    metric = METRICS[args.metric]

    # Candidate list in the reference's order: module names sorted as strings (get_target_layers), minus
    # the front-excluded blocks, which are appended once int(total*x)+1 sublayers have been removed.
    ref_order = sorted(sub, key=lambda s: s.module_name)
    excluded: list[Sublayer] = []
    if args.exclude is not None:
        n_ex_blocks = int(total * args.exclude / 2) + 1
        excluded = [s for s in ref_order if s.block < n_ex_blocks]
        ref_order = [s for s in ref_order if s.block >= n_ex_blocks]
    candidates = ref_order

    result = {
        "tool": "finercut-rs benches/reference/reference_search.py (PyTorch reference)",
        "reference": "github.com/YaNgZhAnG-V5/llm_dissect scripts/prune_layer.py greedy_pruning + Output evaluator",
        "model": model_info(args.model, model, hash_weights=not args.no_hash),
        "calibration": calib,
        "settings": {
            "metric": args.metric,
            "steps": steps,
            "batch_size": args.batch_size,
            "attn_implementation": model.config._attn_implementation,
            "dtype": "float32",
            "removal": "forward hook: o_proj / down_proj output * 0 (branch still computed)",
            "tie_order": args.tie_order,
            "exclude": args.exclude,
        },
        "environment": environment(threads),
        "timing": {"load_s": t_load.s, "tokenize_s": t_tok.s},
        "steps": [],
        "removal_order": [],
    }

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:8.1f}s] {msg}", file=sys.stderr, flush=True)

    log(f"{n_blocks} blocks, {total} sublayers; calibration {tuple(ids.shape)}; metric {args.metric}; "
        f"threads {threads}; attn {result['settings']['attn_implementation']}")
    t_search = time.perf_counter()
    with Timer() as t_dense, CpuMeter() as m_dense:
        dense = run_logits(model, ids, args.batch_size)
    result["timing"]["dense_s"] = t_dense.s
    result["timing"]["dense_other_cpu_cores"] = m_dense.other_cores
    log(f"dense logits {tuple(dense.shape)} in {t_dense.s:.2f}s")

    removed: list[Sublayer] = []
    for step in range(1, steps + 1):
        meter = CpuMeter().__enter__()
        t0 = time.perf_counter()
        scores: list[tuple[Sublayer, float, float, float]] = []  # candidate, score, forward_s, metric_s
        for c in candidates:
            tc = time.perf_counter()
            handles = hooked(removed + [c])
            try:
                logits = run_logits(model, ids, args.batch_size)
            finally:
                for h in handles:
                    h.remove()
            tf = time.perf_counter()
            score = metric(dense, logits)
            del logits
            scores.append((c, score, tf - tc, time.perf_counter() - tf))
        best = min(x[1] for x in scores)
        if args.tie_order == "index":
            chosen = min((x[0] for x in scores if x[1] == best), key=lambda c: c.index)
        else:
            chosen = next(x[0] for x in scores if x[1] == best)
        n_tied = sum(1 for x in scores if x[1] == best)
        removed.append(chosen)
        candidates = [c for c in candidates if c is not chosen]
        if excluded and (len(removed) == int(total * args.exclude) + 1 or not candidates):
            candidates = candidates + excluded
            excluded = []
        wall = time.perf_counter() - t0
        meter.__exit__()
        result["steps"].append({
            "step": step,
            "removed": chosen.name,
            "index": chosen.index,
            "score": best,
            "tied": n_tied,
            "wall_s": wall,
            "forwards": len(scores),
            "forward_s": sum(x[2] for x in scores),
            "metric_s": sum(x[3] for x in scores),
            "own_cpu_cores": meter.own_cores,
            "other_cpu_cores": meter.other_cores,
            "candidates": [
                {"name": c.name, "index": c.index, "score": sc, "forward_s": fs, "metric_s": ms}
                for c, sc, fs, ms in sorted(scores, key=lambda x: x[0].index)
            ],
        })
        result["removal_order"].append(chosen.name)
        result["timing"]["search_s"] = time.perf_counter() - t_search
        result["timing"]["total_s"] = time.perf_counter() - t_start
        result["peak_rss_mib"] = peak_rss_mib()
        if args.out:
            write_json(args.out, result)
        log(f"step {step}: remove {chosen.name} (score {best:.6e}{', tie x' + str(n_tied) if n_tied > 1 else ''}) "
            f"- {len(scores)} candidates in {wall:.1f}s (forwards {sum(x[2] for x in scores):.1f}s, "
            f"metric {sum(x[3] for x in scores):.1f}s; other processes used "
            f"{meter.other_cores if meter.other_cores is not None else float('nan'):.2f} cores)")

    result["timing"]["search_s"] = time.perf_counter() - t_search
    result["timing"]["total_s"] = time.perf_counter() - t_start
    result["peak_rss_mib"] = peak_rss_mib()
    if args.out:
        write_json(args.out, result)
    else:
        json.dump(result, sys.stdout, indent=1)
        print()
    log(f"done: {', '.join(result['removal_order'])}; peak RSS {result['peak_rss_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
