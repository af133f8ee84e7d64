#!/usr/bin/env python3
"""Test helper: turn a Llama-architecture GGUF into a Hugging Face directory with transformers.

    PYTHONPATH=/tmp/gguf-pkgs .venv-reference/bin/python benches/reference/gguf_to_hf.py MODEL.gguf OUT_DIR

Needs the `gguf`, `accelerate` and `psutil` packages, which requirements.txt does not install (see
README.md). transformers dequantizes every tensor to float32 and undoes llama.cpp's q/k row permutation;
the GGUF quantization marker is then dropped so that save_pretrained accepts the (already float32) model.
"""

from __future__ import annotations

import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    gguf, out = sys.argv[1], sys.argv[2]
    d, f = os.path.dirname(os.path.abspath(gguf)), os.path.basename(gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(out)
    tok.save_pretrained(out)
    print(f"wrote {out}: {type(model).__name__}, {model.config.num_hidden_layers} blocks", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
