"""Shared helpers of the PyTorch reference scripts (benches/reference/)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import sys
import time
from typing import Any

import torch


def set_threads(n: int | None) -> int:
    """torch.set_num_threads(n) (intra-op: OpenMP/MKL); returns the count in force."""
    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def load_llama(model_dir: str, attn: str) -> torch.nn.Module:
    """A Hugging Face Llama directory (config.json + *.safetensors) as LlamaForCausalLM, float32, eval."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attn)
    model.eval()
    model.requires_grad_(False)
    return model


def peak_rss_mib() -> float:
    """Peak resident set size of this process (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sha256_file(path: str, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def model_info(model_dir: str, model: torch.nn.Module, hash_weights: bool) -> dict[str, Any]:
    cfg = model.config
    files = sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors"))
    info: dict[str, Any] = {
        "dir": os.path.abspath(model_dir),
        "architecture": type(model).__name__,
        "num_blocks": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
        "config_sha256": sha256_file(os.path.join(model_dir, "config.json")),
        "weight_files": {f: os.path.getsize(os.path.join(model_dir, f)) for f in files},
    }
    if hash_weights:
        info["weight_sha256"] = {f: sha256_file(os.path.join(model_dir, f)) for f in files}
    return info


def environment(threads: int) -> dict[str, Any]:
    import numpy
    import transformers

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "torch_threads": threads,
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "cuda_available": torch.cuda.is_available(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "env": {k: os.environ.get(k) for k in
                ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
    }


def write_json(path: str, obj: Any) -> None:
    """Write atomically (tmp + rename), so a checkpoint is never half-written."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def _system_busy_s() -> float | None:
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def _own_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class CpuMeter:
    """How busy the rest of the machine was meanwhile: (system CPU time - this process's CPU time) / wall,
    in cores. On a shared 2-core machine, anything much above 0 makes OpenMP timings unreliable."""

    def __enter__(self) -> "CpuMeter":
        self.b0, self.o0, self.t0 = _system_busy_s(), _own_cpu_s(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.t0
        b1 = _system_busy_s()
        self.own_cores = (_own_cpu_s() - self.o0) / wall if wall > 0 else 0.0
        if self.b0 is None or b1 is None or wall <= 0:
            self.other_cores = None
        else:
            self.other_cores = max(0.0, (b1 - self.b0 - (_own_cpu_s() - self.o0)) / wall)


class Timer:
    def __enter__(self) -> "Timer":
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.perf_counter() - self.t0
