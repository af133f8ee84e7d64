"""Tiny random models of every supported family, with transformers' logits and greedy removal orders.

For each family (Llama with `llama3` RoPE scaling, Mistral with a sliding window shorter than the
sequence, Qwen2, Gemma 3, Qwen3 with q/k norms and head_dim != hidden/heads, Mixtral with a sparse
mixture of experts) this script builds a seeded random model with transformers, writes it as a Hugging
Face directory (config.json + model.safetensors, float32) and computes with the same transformers model:

* `logits.npy`: float32 logits `[2, 16, vocab]` of `TOKENS` (eager attention, float32, CPU);
* `expected.json`: the tokens, the 6-step greedy FinerCut removal order with the `js-reference` metric
  over all positions of both sequences (removal by forward hooks that zero the output of a branch:
  `self_attn` or `mlp`, for Mixtral the whole sparse mixture), each step's score and the gap to the
  runner-up, and the transformers/torch versions.

Families added later come after these, so every family keeps its seed: Gemma 2 (attention and
final logit soft-capping, sliding windows on every other layer, sandwich norms without QK-norm) and
OLMo 2 (RMSNorms after each branch and none before, QK-norm over the whole q and k projections)
and Qwen3-MoE (4 experts, 2 per token, weights not renormalised: `norm_topk_prob` false).
Then Phi-3 (fused `qkv_proj` and `gate_up_proj`) three ways: `phi3` with LongRoPE whose original
context (32) is longer than the sequences, so the short factors apply, the attention factor derived
from the context ratio, and a sliding window of 5; `phi3_longrope` with an original context of 12,
so 16-token sequences use the long factors, an explicit attention factor, and `logits_short.npy`:
the logits of the first 12 tokens, which use the short ones; `phi4_mini` with Phi-4-mini's partial
rotary factor 0.75 (12 of 16 values rotate), tied embeddings and the long factors.
Then GPT-NeoX twice: `gpt_neox` (Pythia's layout: parallel residual, partial rotary over half of each
head, exact GELU, LayerNorms and projections with biases, its config.json rewritten in Pythia's
`rotary_pct` / `rotary_emb_base` spelling and its head stored as `embed_out`) and
`gpt_neox_sequential` (`use_parallel_residual` false, a quarter of each head rotated, transformers
5's own `rope_parameters` spelling and `lm_head`). Removing a GPT-NeoX branch zeroes the output of
`attention` or `mlp`: in a parallel block the other branch still reads the block input.

For every model it also writes `logits_zeroed.npy` and `zeroed.json`: the logits of the model loaded
by `from_pretrained` from a copy of its stock files in which the output projections (weight and bias;
for a mixture, every expert's) of sublayers 0, 3, 4 and 5 are zero, which is what
`finercut export --format hf-compatible` writes for those sublayers removed.

Run with the reference venv:
`/path/to/venv/bin/python benches/reference/make_tiny_families.py OUT_DIR [FAMILY ...]`
(all families, or the ones named; the committed files are in `data/golden/tiny/`).
Deterministic: same versions, same files.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

SEED = 20240528
VOCAB = 256
SEQ = 16
STEPS = 6
# `phi3_longrope`'s original context: its 16-token sequences use the long factors, their first 12
# tokens (`logits_short.npy`) the short ones.
SHORT = 12
# Two calibration sequences of SEQ tokens, fixed (not drawn from a generator that could change).
TOKENS = [[(7 + 37 * j + 11 * i * i + 5 * i) % VOCAB for j in range(SEQ)] for i in range(2)]

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=None,
)


def families() -> dict[str, tuple[type, dict]]:
    from transformers import (
        GPTNeoXConfig,
        Gemma2Config,
        Gemma3TextConfig,
        LlamaConfig,
        MistralConfig,
        MixtralConfig,
        Olmo2Config,
        Phi3Config,
        Qwen3MoeConfig,
        Qwen2Config,
        Qwen3Config,
    )

    return {
        "llama3": (
            LlamaConfig,
            dict(
                COMMON,
                intermediate_size=64,
                rms_norm_eps=1e-5,
                tie_word_embeddings=False,
                # head_dim 16, theta 10000: wavelengths 6.3 … 19869; with an original context of 64 the
                # bands are kept (< 16), interpolated (16 … 64) and divided by 8 (> 64).
                rope_parameters=dict(
                    rope_type="llama3",
                    rope_theta=10000.0,
                    factor=8.0,
                    low_freq_factor=1.0,
                    high_freq_factor=4.0,
                    original_max_position_embeddings=64,
                ),
            ),
        ),
        "mistral": (
            MistralConfig,
            dict(
                COMMON,
                intermediate_size=64,
                rms_norm_eps=1e-5,
                sliding_window=5,
                tie_word_embeddings=True,
                rope_parameters=dict(rope_type="default", rope_theta=10000.0),
            ),
        ),
        "qwen2": (
            Qwen2Config,
            dict(
                COMMON,
                intermediate_size=64,
                rms_norm_eps=1e-6,
                tie_word_embeddings=True,
                rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
            ),
        ),
        "gemma3": (
            Gemma3TextConfig,
            dict(
                COMMON,
                intermediate_size=64,
                head_dim=16,
                rms_norm_eps=1e-6,
                sliding_window=5,
                layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
                query_pre_attn_scalar=24,
                final_logit_softcapping=12.0,
                # transformers 5.24 stores but never applies it in Gemma3Attention (Gemma 3 has none).
                attn_logit_softcapping=None,
                hidden_activation="gelu_pytorch_tanh",
                tie_word_embeddings=True,
                rope_parameters=dict(
                    full_attention=dict(rope_type="default", rope_theta=1000000.0),
                    sliding_attention=dict(rope_type="default", rope_theta=10000.0),
                ),
            ),
        ),
        "qwen3": (
            Qwen3Config,
            dict(
                COMMON,
                intermediate_size=64,
                head_dim=24,
                rms_norm_eps=1e-6,
                tie_word_embeddings=True,
                rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
            ),
        ),
        "mixtral": (
            MixtralConfig,
            dict(
                COMMON,
                intermediate_size=16,
                num_local_experts=4,
                num_experts_per_tok=2,
                rms_norm_eps=1e-5,
                tie_word_embeddings=False,
                rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
            ),
        ),
        "gemma2": (
            Gemma2Config,
            dict(
                COMMON,
                intermediate_size=64,
                head_dim=16,
                rms_norm_eps=1e-6,
                sliding_window=5,
                # layer_types left to the default: sliding, full, sliding, full.
                query_pre_attn_scalar=24,
                final_logit_softcapping=12.0,
                attn_logit_softcapping=4.0,
                hidden_activation="gelu_pytorch_tanh",
                tie_word_embeddings=True,
                rope_parameters=dict(rope_type="default", rope_theta=10000.0),
            ),
        ),
        "olmo2": (
            Olmo2Config,
            dict(
                COMMON,
                intermediate_size=64,
                rms_norm_eps=1e-6,
                tie_word_embeddings=False,
                rope_parameters=dict(rope_type="default", rope_theta=500000.0),
            ),
        ),
        "qwen3_moe": (
            Qwen3MoeConfig,
            dict(
                COMMON,
                intermediate_size=64,
                moe_intermediate_size=16,
                num_experts=4,
                num_experts_per_tok=2,
                # Mixtral renormalises the chosen experts' weights; this tests the other way.
                norm_topk_prob=False,
                rms_norm_eps=1e-6,
                tie_word_embeddings=False,
                rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
            ),
        ),
        "phi3": (
            Phi3Config,
            dict(
                COMMON,
                intermediate_size=64,
                rms_norm_eps=1e-5,
                sliding_window=5,
                tie_word_embeddings=False,
                original_max_position_embeddings=32,
                rope_parameters=dict(
                    rope_type="longrope",
                    rope_theta=10000.0,
                    short_factor=[1.0 + 0.05 * i for i in range(8)],
                    long_factor=[1.5 + 0.4 * i for i in range(8)],
                ),
            ),
        ),
        "phi3_longrope": (
            Phi3Config,
            dict(
                COMMON,
                intermediate_size=64,
                rms_norm_eps=1e-5,
                tie_word_embeddings=False,
                original_max_position_embeddings=SHORT,
                rope_parameters=dict(
                    rope_type="longrope",
                    rope_theta=10000.0,
                    short_factor=[1.0 + 0.05 * i for i in range(8)],
                    long_factor=[1.5 + 0.4 * i for i in range(8)],
                    attention_factor=1.2,
                ),
            ),
        ),
        "phi4_mini": (
            Phi3Config,
            dict(
                COMMON,
                intermediate_size=64,
                rms_norm_eps=1e-5,
                tie_word_embeddings=True,
                original_max_position_embeddings=8,
                partial_rotary_factor=0.75,
                rope_parameters=dict(
                    rope_type="longrope",
                    rope_theta=10000.0,
                    partial_rotary_factor=0.75,
                    short_factor=[1.0 + 0.05 * i for i in range(6)],
                    long_factor=[1.5 + 0.4 * i for i in range(6)],
                ),
            ),
        ),
        "gpt_neox": (GPTNeoXConfig, dict(NEOX, use_parallel_residual=True, rotary_pct=0.5, rotary_emb_base=10000)),
        "gpt_neox_sequential": (
            GPTNeoXConfig,
            dict(
                NEOX,
                use_parallel_residual=False,
                rope_parameters=dict(rope_type="default", rope_theta=20000.0, partial_rotary_factor=0.25),
            ),
        ),
    }


# GPT-NeoX has no key/value head count (every head has its own keys) and LayerNorms.
NEOX = dict(
    {k: v for k, v in COMMON.items() if k != "num_key_value_heads"},
    intermediate_size=128,
    layer_norm_eps=1e-5,
    hidden_act="gelu",
    attention_bias=True,
    tie_word_embeddings=False,
)


def layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return model.gpt_neox.layers if hasattr(model, "gpt_neox") else model.model.layers


def attn_of(layer: torch.nn.Module) -> torch.nn.Module:
    return layer.attention if hasattr(layer, "attention") else layer.self_attn


def randomise(model: torch.nn.Module, family: str, gen: torch.Generator) -> None:
    """Every parameter drawn afresh, so that biases, norms and routers are not at their init values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                # Gemma norms compute x * (1 + w); the others x * w.
                centre = 0.0 if family.startswith("gemma") else 1.0
                p.copy_(centre + 0.2 * noise)
            elif "embed_tokens" in name or "embed_in" in name:
                p.copy_(noise)
            elif name.endswith(".bias"):
                p.copy_(0.3 * noise)
            elif name.endswith("mlp.gate.weight"):
                # Router: spread enough that no token sits near a routing tie.
                p.copy_(0.3 * noise)
            else:
                fan_in = p.shape[-1]
                p.copy_(noise * (1.5 / fan_in**0.5))
        # Branches of unequal strength, so the greedy order is not simply last-to-first.
        for layer in layers(model):
            if family.startswith("gpt_neox"):
                for branch, out in [(layer.attention, "dense"), (layer.mlp, "dense_4h_to_h")]:
                    getattr(branch, out).weight.mul_(0.2 + 1.6 * float(torch.rand(1, generator=gen)))
                continue
            for branch, out in [(layer.self_attn, "o_proj"), (layer.mlp, "down_proj")]:
                s = 0.2 + 1.6 * float(torch.rand(1, generator=gen))
                if family.startswith("gemma"):
                    # The post-branch norm would undo a scaled projection: scale its (1 + w).
                    post = layer.post_attention_layernorm if out == "o_proj" else layer.post_feedforward_layernorm
                    post.weight.copy_(s * (1.0 + post.weight) - 1.0)
                elif family == "olmo2":
                    post = layer.post_attention_layernorm if out == "o_proj" else layer.post_feedforward_layernorm
                    post.weight.mul_(s)
                elif family in ("mixtral", "qwen3_moe") and out == "down_proj":
                    branch.experts.down_proj.mul_(s)
                else:
                    getattr(branch, out).weight.mul_(s)


def hf_state_dict(model: torch.nn.Module, family: str) -> dict[str, torch.Tensor]:
    """The checkpoint as published models store it: Mixtral's experts one tensor per expert and
    matrix under `block_sparse_moe` (transformers 5 fuses them in memory and reads either layout)."""
    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    if family == "gpt_neox":
        # Published Pythia checkpoints name the head `embed_out` (transformers 5 renames it on load).
        sd["embed_out.weight"] = sd.pop("lm_head.weight")
    if family == "qwen3_moe":
        # Published Qwen3-MoE checkpoints: `mlp.experts.E.{gate,up,down}_proj.weight`.
        out = {}
        for k, v in sd.items():
            if ".mlp.experts.gate_up_proj" in k:
                prefix = k.split(".mlp.")[0] + ".mlp.experts"
                ffn = v.shape[1] // 2
                for e in range(v.shape[0]):
                    out[f"{prefix}.{e}.gate_proj.weight"] = v[e, :ffn].contiguous()
                    out[f"{prefix}.{e}.up_proj.weight"] = v[e, ffn:].contiguous()
            elif ".mlp.experts.down_proj" in k:
                prefix = k.split(".mlp.")[0] + ".mlp.experts"
                for e in range(v.shape[0]):
                    out[f"{prefix}.{e}.down_proj.weight"] = v[e].contiguous()
            else:
                out[k] = v
        return out
    if family != "mixtral":
        return sd
    out = {}
    for k, v in sd.items():
        if ".mlp.experts.gate_up_proj" in k:
            prefix = k.split(".mlp.")[0] + ".block_sparse_moe.experts"
            ffn = v.shape[1] // 2
            for e in range(v.shape[0]):
                out[f"{prefix}.{e}.w1.weight"] = v[e, :ffn].contiguous()
                out[f"{prefix}.{e}.w3.weight"] = v[e, ffn:].contiguous()
        elif ".mlp.experts.down_proj" in k:
            prefix = k.split(".mlp.")[0] + ".block_sparse_moe.experts"
            for e in range(v.shape[0]):
                out[f"{prefix}.{e}.w2.weight"] = v[e].contiguous()
        elif ".mlp.gate.weight" in k:
            out[k.replace(".mlp.gate.", ".block_sparse_moe.gate.")] = v
        else:
            out[k] = v
    return out


def pythia_spelling(path: str) -> None:
    """Rewrites a GPT-NeoX config.json with Pythia's RoPE keys (`rotary_pct`, `rotary_emb_base`), as
    the published Pythia checkpoints have it, instead of transformers 5's `rope_parameters`."""
    with open(path) as f:
        cfg = json.load(f)
    rope = cfg.pop("rope_parameters")
    cfg["rotary_pct"] = rope["partial_rotary_factor"]
    cfg["rotary_emb_base"] = rope["rope_theta"]
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def js_reference(dense: np.ndarray, pruned: np.ndarray) -> float:
    """`js-reference` (crates/metrics): ½[KL(M‖P) + KL(M‖Q)], M = (P+Q)/2, summed over every element
    and divided by rows × vocabulary; float64."""
    lp = dense - np.logaddexp.reduce(dense, axis=-1, keepdims=True)
    lq = pruned - np.logaddexp.reduce(pruned, axis=-1, keepdims=True)
    p, q = np.exp(lp), np.exp(lq)
    m = 0.5 * (p + q)
    lm = np.log(m)
    total = 0.5 * (m * (lm - lp) + m * (lm - lq)).sum()
    return float(total / (dense.shape[0] * dense.shape[1] * dense.shape[2]))


class Zero:
    """Forward hook: the branch's output replaced by zeros (its first element for tuple outputs)."""

    def __call__(self, module, inputs, output):
        if isinstance(output, tuple):
            return (torch.zeros_like(output[0]),) + tuple(output[1:])
        return torch.zeros_like(output)


def branches(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The 2L branches in execution order: L0.attn, L0.mlp, L1.attn, …"""
    out = []
    for layer in layers(model):
        out += [attn_of(layer), layer.mlp]
    return out


def logits_with(model: torch.nn.Module, ids: torch.Tensor, removed: list[int]) -> np.ndarray:
    mods = branches(model)
    handles = [mods[i].register_forward_hook(Zero()) for i in removed]
    try:
        with torch.no_grad():
            out = model(input_ids=ids, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    return out.to(torch.float64).numpy()


def greedy(model: torch.nn.Module, ids: torch.Tensor) -> list[dict]:
    """FinerCut's greedy search: each step removes the candidate of least divergence (ties: lowest index)."""
    dense = logits_with(model, ids, [])
    removed: list[int] = []
    steps = []
    n = len(branches(model))
    for _ in range(STEPS):
        scored = [(js_reference(dense, logits_with(model, ids, removed + [c])), c) for c in range(n) if c not in removed]
        scored.sort()
        (best, c), runner = scored[0], scored[1] if len(scored) > 1 else (float("inf"), -1)
        removed.append(c)
        steps.append({"removed": c, "score": best, "runner_up": runner[1], "runner_up_score": runner[0]})
    return steps


def watch_router_margin(model: torch.nn.Module) -> list[float]:
    """Records, for every forward from now on, the smallest gap between the k-th and (k+1)-th router
    logit over all tokens and layers (a small gap would make the expert choice fragile)."""
    gaps: list[float] = []

    def hook(module, inputs, output):
        top = torch.topk(output[0].float(), module.top_k + 1, dim=-1).values
        gaps.append(float((top[:, -2] - top[:, -1]).min()))

    for layer in model.model.layers:
        layer.mlp.gate.register_forward_hook(hook)
    return gaps


# The sublayers that `zeroed_export` removes: L0.attn and L1.mlp alone in their blocks, both of L2.
ZEROED = [0, 3, 4, 5]


def output_projections(names, sublayer: int) -> list[str]:
    """The stored tensors of a sublayer's output projection (weight and bias, where stored): attention's
    `self_attn.o_proj` (GPT-NeoX: `attention.dense`), the FFN's `mlp.down_proj` (GPT-NeoX:
    `mlp.dense_4h_to_h`), or every expert's down projection (Mixtral: `block_sparse_moe.experts.E.w2`,
    Qwen3-MoE: `mlp.experts.E.down_proj`)."""
    import re

    b = sublayer // 2
    if sublayer % 2 == 0:
        module = r"(self_attn\.o_proj|attention\.dense)"
    else:
        module = r"(mlp\.down_proj|mlp\.dense_4h_to_h|block_sparse_moe\.experts\.\d+\.w2|mlp\.experts\.\d+\.down_proj)"
    pattern = re.compile(rf"(model|gpt_neox)\.layers\.{b}\.{module}\.(weight|bias)")
    return sorted(n for n in names if pattern.fullmatch(n))


def zeroed_export(d: str, family: str, ids: torch.Tensor, hooked: np.ndarray) -> None:
    """What `export --format hf-compatible` means, done in the stock files: the output projections
    of the sublayers in ZEROED set to zero in a copy of `model.safetensors`, loaded by
    `from_pretrained` (no tensor may be missing or unexpected), computes what the forward hooks
    compute with those branches removed (`hooked`, to 1e-5). Writes `zeroed.json` (the sublayers
    and the zeroed tensors) and `logits_zeroed.npy` (float32 logits of the tokens)."""
    import shutil
    import tempfile

    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    tensors = load_file(os.path.join(d, "model.safetensors"))
    names = [n for i in ZEROED for n in output_projections(tensors, i)]
    for n in names:
        tensors[n] = torch.zeros_like(tensors[n])
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(os.path.join(d, "config.json"), tmp)
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        model, info = AutoModelForCausalLM.from_pretrained(
            tmp, attn_implementation="eager", dtype=torch.float32, output_loading_info=True
        )
    assert not info["missing_keys"] and not info["unexpected_keys"], f"{family}: {info}"
    model.eval()
    zeroed = logits_with(model, ids, [])
    diff = float(np.abs(zeroed - hooked).max())
    assert diff <= 1e-5, f"{family}: zeroed projections differ from removed branches by {diff}"
    np.save(os.path.join(d, "logits_zeroed.npy"), zeroed.astype(np.float32))
    with open(os.path.join(d, "zeroed.json"), "w") as f:
        json.dump({"zeroed_sublayers": ZEROED, "zeroed_tensors": names}, f, indent=1)
        f.write("\n")


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    out_dir, only = sys.argv[1], set(sys.argv[2:])
    unknown = only - set(families())
    if unknown:
        print(f"unknown families {sorted(unknown)}; known: {sorted(families())}")
        return 2
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM

    ids = torch.tensor(TOKENS, dtype=torch.long)
    for index, (family, (cls, kwargs)) in enumerate(families().items()):
        if only and family not in only:
            continue
        cfg = cls(**kwargs)
        torch.manual_seed(SEED + index)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
        gen = torch.Generator().manual_seed(SEED + index)
        randomise(model, family, gen)
        d = os.path.join(out_dir, family)
        os.makedirs(d, exist_ok=True)
        # config.json as transformers writes it; the weights in the published layout.
        model.config.save_pretrained(d)
        if family == "gpt_neox":
            pythia_spelling(os.path.join(d, "config.json"))
        save_file(hf_state_dict(model, family), os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        # Everything below is computed by the model transformers loads back from those files.
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        model = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", dtype=torch.float32)
        model.eval()
        # Every weight came back (a renamed or missing one would be drawn afresh, with a warning only).
        for k, v in model.state_dict().items():
            assert torch.equal(v, saved[k]), f"{family}: {k} did not load back"
        gaps = watch_router_margin(model) if family in ("mixtral", "qwen3_moe") else []
        logits = logits_with(model, ids, []).astype(np.float32)
        np.save(os.path.join(d, "logits.npy"), logits)
        if family == "phi3_longrope":
            short = logits_with(model, ids[:, :SHORT], []).astype(np.float32)
            np.save(os.path.join(d, "logits_short.npy"), short)
        steps = greedy(model, ids)
        expected = {
            "family": family,
            "model_class": type(model).__name__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "attn_implementation": "eager",
            "tokens": TOKENS,
            "logits_shape": list(logits.shape),
            "metric": "js-reference",
            "removal": "forward hook zeroing the output of self_attn or mlp (Mixtral: the whole sparse mixture)",
            "greedy": steps,
        }
        if gaps:
            expected["router_margin"] = min(gaps)
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump(expected, f, indent=1)
            f.write("\n")
        zeroed_export(d, family, ids, logits_with(model, ids, ZEROED))
        gaps = [s["runner_up_score"] - s["score"] for s in steps]
        print(
            family,
            [s["removed"] for s in steps],
            "min relative gap %.2e" % min(g / max(s["score"], 1e-30) for g, s in zip(gaps, steps)),
            "router margin %.2e" % expected.get("router_margin", float("nan")),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
