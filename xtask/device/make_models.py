#!/usr/bin/env python3
"""Random Llama checkpoints for the device check, written with PyTorch on the GPU machine.

Writes a Hugging Face directory (config.json, model.safetensors, tokenizer.json copied from a
`finercut make-tiny` model) of the given shape, with weights drawn on the GPU (fast) and scaled like
1/sqrt(fan-in), in the requested dtype. Also writes calibration ids (JSON list of lists) below the
tokenizer's vocabulary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file

SHAPES = {
    # SmolLM2-135M: 30 blocks, d 576, 9/3 heads, FFN 1536, vocab 49152, tied embeddings.
    "smollm2": dict(hidden=576, ffn=1536, blocks=30, heads=9, kv_heads=3, vocab=49152, tied=True,
                    theta=100000.0),
    # Llama-3-8B: 32 blocks, d 4096, 32/8 heads, FFN 14336, vocab 128256, separate LM head.
    "llama3-8b": dict(hidden=4096, ffn=14336, blocks=32, heads=32, kv_heads=8, vocab=128256,
                      tied=False, theta=500000.0),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("out")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json to copy")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    s = SHAPES[args.shape]
    dtype = getattr(torch, args.dtype)
    os.makedirs(args.out, exist_ok=True)
    d, hd = s["hidden"], s["hidden"] // s["heads"]
    kv = s["kv_heads"] * hd
    g = torch.Generator(device="cuda").manual_seed(args.seed)

    def rand(shape, center=0.0, spread=1.0):
        t = torch.rand(shape, generator=g, device="cuda", dtype=torch.float32)
        return ((t * 2 - 1) * spread + center).to(dtype).cpu()

    w = lambda fan_in: 1.7 / fan_in ** 0.5  # noqa: E731
    tensors = {"model.embed_tokens.weight": rand((s["vocab"], d))}
    for b in range(s["blocks"]):
        p = f"model.layers.{b}."
        tensors[p + "self_attn.q_proj.weight"] = rand((d, d), spread=w(d))
        tensors[p + "self_attn.k_proj.weight"] = rand((kv, d), spread=w(d))
        tensors[p + "self_attn.v_proj.weight"] = rand((kv, d), spread=w(d))
        tensors[p + "self_attn.o_proj.weight"] = rand((d, d), spread=w(d) / 4)
        tensors[p + "mlp.gate_proj.weight"] = rand((s["ffn"], d), spread=w(d))
        tensors[p + "mlp.up_proj.weight"] = rand((s["ffn"], d), spread=w(d))
        tensors[p + "mlp.down_proj.weight"] = rand((d, s["ffn"]), spread=w(s["ffn"]) / 4)
        tensors[p + "input_layernorm.weight"] = rand((d,), 1.0, 0.2)
        tensors[p + "post_attention_layernorm.weight"] = rand((d,), 1.0, 0.2)
    tensors["model.norm.weight"] = rand((d,), 1.0, 0.2)
    if not s["tied"]:
        tensors["lm_head.weight"] = rand((s["vocab"], d), spread=w(d))
    save_file(tensors, os.path.join(args.out, "model.safetensors"))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": s["vocab"],
        "hidden_size": d,
        "intermediate_size": s["ffn"],
        "num_hidden_layers": s["blocks"],
        "num_attention_heads": s["heads"],
        "num_key_value_heads": s["kv_heads"],
        "head_dim": hd,
        "rms_norm_eps": 1e-5,
        "rope_theta": s["theta"],
        "max_position_embeddings": 8192,
        "tie_word_embeddings": s["tied"],
        "hidden_act": "silu",
        "attention_bias": False,
        "torch_dtype": args.dtype,
        "bos_token_id": 256,
        "eos_token_id": 256,
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    shutil.copy(args.tokenizer, os.path.join(args.out, "tokenizer.json"))


if __name__ == "__main__":
    main()
