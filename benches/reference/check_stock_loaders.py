"""Checks what unmodified Hugging Face transformers does with finercut's checkpoint layouts.

    .venv-reference/bin/python benches/reference/check_stock_loaders.py --finercut target/debug/finercut

With a tiny random Llama (`finercut make-tiny`), a FinerCut search and SliceGPT, it writes
  - `export --format dropped` (removed sublayers' tensors absent),
  - `export --format hf-compatible` (stock layout, zeroed output projections),
  - `slice` (SliceGPT: residual shortcut matrices, a narrower residual stream),
and asserts that `AutoModelForCausalLM.from_pretrained` refuses the first and the third (their
config.json declares a `model_type` transformers does not know), that the source's class
(`LlamaForCausalLM.from_pretrained`, which reads no `model_type`) refuses them too (their weights
are in `finercut-dropped.safetensors` / `finercut-slicegpt.safetensors`, not `model.safetensors`,
with that `format` in the safetensors metadata), and that both load the second with no missing or
unexpected tensor and with the next-token log-probabilities finercut computes for the pruned model
(to 1e-4).
As a control, it also loads a copy of the dropped export whose `model_type`/`architectures` were put
back to the source's and whose weights file was renamed `model.safetensors`: transformers then
loads it with only a warning and random tensors in place of the dropped ones (what the marking
prevents), although the file's `format` metadata still says `finercut-dropped` (transformers 5
does not read it), so the check would fail if the marking were dropped.
With `--like NAME ...` (default: pythia-160m phi-3-mini phi-4-mini, each with `--blocks` 2), it
also checks families whose checkpoints store tensors under their own names: the random model of
`make-tiny --like NAME` and its `export --format hf-compatible` (after a FinerCut search removing
half of the sublayers) load with the source's class and `AutoModelForCausalLM` with no missing or
unexpected tensor, the first with the next-token log-probabilities finercut computes for it, the
second with those finercut computes for the pruned model (to 1e-4).
Prints one line per layout and loader and exits non-zero on any failed expectation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch


def run(finercut: str, *args: str) -> str:
    out = subprocess.run([finercut, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"finercut {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def try_load(path: str, class_name: str = "AutoModelForCausalLM"):
    """(model, loading_info) or (None, the exception's first line), loading with `class_name`."""
    import transformers

    try:
        model, info = getattr(transformers, class_name).from_pretrained(
            path, dtype=torch.float32, output_loading_info=True
        )
        return model, info
    except Exception as e:  # noqa: BLE001 - any refusal counts; the message is printed
        return None, f"{type(e).__name__}: {str(e).splitlines()[0]}"


def safetensors_format(path: str) -> str:
    """The `format` in the `__metadata__` of the directory's one `.safetensors` file."""
    from safetensors import safe_open

    files = [f for f in os.listdir(path) if f.endswith(".safetensors")]
    if len(files) != 1:
        return f"{len(files)} safetensors files"
    with safe_open(os.path.join(path, files[0]), framework="pt") as f:
        return f"{files[0]} format {(f.metadata() or {}).get('format')!r}"


def logprob_diff(model, finercut: str, path: str) -> tuple[float, int]:
    """The largest difference between `model`'s next-token log-probabilities after a prompt and
    those `finercut run` computes with the model at `path`, and how many sublayers it removed."""
    ours = json.loads(run(finercut, "run", "--model", path, "--prompt", "Hello world", "--json"))
    with torch.no_grad():
        logits = model(torch.tensor([ours["ids"]])).logits[0, -1].double()
    theirs = torch.log_softmax(logits, dim=-1)
    diff = (theirs - torch.tensor(ours["logprobs"], dtype=torch.float64)).abs().max().item()
    return diff, len(ours["removed_sublayers"])


def check_like(finercut: str, p, calib: list[str], like: str, blocks: str) -> list[str]:
    """make-tiny --like `like` and its hf-compatible export in transformers (see the module doc)."""
    failures = []
    src, hf, dropped, plan = (p(f"{like}-{x}") for x in ("src", "hf", "dropped", "run.json"))
    run(finercut, "make-tiny", src, "--like", like, "--blocks", blocks, "--force")
    if os.path.exists(plan):
        os.remove(plan)
    run(finercut, "prune", "--model", src, *calib, "--ratio", "0.5", "--out", plan)
    export = ["export", "--model", src, "--plan", plan, "--ratio", "0.5", "--force"]
    run(finercut, *export, "--format", "hf-compatible", "--out", hf)
    run(finercut, *export, "--out", dropped)
    class_name = json.load(open(os.path.join(src, "config.json")))["architectures"][0]
    for name, path, ours in [(f"{like} make-tiny", src, src), (f"{like} hf-compatible", hf, dropped)]:
        for loader in ["AutoModelForCausalLM", class_name]:
            model, info = try_load(path, loader)
            if model is None:
                print(f"FAIL: {name:26} {loader:21} refused: {info}")
                failures.append(f"{name} ({loader})")
                continue
            missing, unexpected = info["missing_keys"], info["unexpected_keys"]
            diff, removed = logprob_diff(model, finercut, ours)
            good = not missing and not unexpected and diff <= 1e-4
            print(f"{'ok' if good else 'FAIL'}: {name:26} {loader:21} loaded: missing "
                  f"{len(missing)}, unexpected {len(unexpected)} tensors; next-token "
                  f"log-probabilities within {diff:.2e} of finercut's ({removed} sublayers removed)")
            if not good:
                failures.append(f"{name} ({loader})")
            del model
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--finercut", required=True, help="path of the finercut binary")
    ap.add_argument("--keep", help="write the checkpoints here instead of a temporary directory")
    ap.add_argument("--like", nargs="*", default=["pythia-160m", "phi-3-mini", "phi-4-mini"],
                    help="make-tiny --like presets whose stock layout to check")
    ap.add_argument("--blocks", default="2", help="blocks of the --like models")
    args = ap.parse_args()
    finercut = os.path.abspath(args.finercut)
    import transformers

    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    root = args.keep or tempfile.mkdtemp(prefix="finercut-stock-")
    os.makedirs(root, exist_ok=True)
    p = lambda name: os.path.join(root, name)  # noqa: E731
    with open(p("calib.txt"), "w") as f:
        f.write("The quick brown fox jumps over the lazy dog. " * 40)
    calib = ["--calib", p("calib.txt"), "--samples", "2", "--seq-len", "32"]
    run(finercut, "make-tiny", p("tiny"))
    if os.path.exists(p("run.json")):
        os.remove(p("run.json"))
    run(finercut, "prune", "--model", p("tiny"), *calib, "--ratio", "0.5", "--out", p("run.json"))
    export = ["export", "--model", p("tiny"), "--plan", p("run.json"), "--ratio", "0.25", "--force"]
    run(finercut, *export, "--out", p("dropped"))
    run(finercut, *export, "--format", "hf-compatible", "--out", p("hf-compatible"))
    run(finercut, "slice", "--model", p("tiny"), *calib, "--ratio", "0.25", "--out", p("sliced"),
        "--force")

    failures = []
    layouts = [("dropped", "refused", "finercut"), ("sliced", "refused", "slicegpt"),
               ("hf-compatible", "loaded", None)]
    for name, want, section in layouts:
        config = json.load(open(os.path.join(p(name), "config.json")))
        # The source's class, as a user would name it (the marked configs keep it in their section).
        source_class = (config[section] if section else config)["architectures"][0]
        if want == "refused" and os.path.exists(os.path.join(p(name), "model.safetensors")):
            # Loading it by class name would build a default-sized model: stop before that.
            print(f"FAIL: {name} has a model.safetensors")
            failures.append(f"{name} (file name)")
            continue
        print(f"   {name}: {safetensors_format(p(name))}")
        for loader in ["AutoModelForCausalLM", source_class]:
            model, info = try_load(p(name), loader)
            got = "refused" if model is None else "loaded"
            detail = info if model is None else (
                f"missing {len(info['missing_keys'])}, unexpected {len(info['unexpected_keys'])} "
                "tensors"
            )
            verdict = "ok" if got == want else "FAIL"
            print(f"{verdict}: {name:14} model_type {config['model_type']!r:20} {loader:21} "
                  f"{got}: {detail}")
            if got != want:
                failures.append(f"{name} ({loader})")
            if model is not None and (info["missing_keys"] or info["unexpected_keys"]):
                failures.append(f"{name} ({loader}, tensors)")

    # The hf-compatible export computes finercut's pruned logits in transformers.
    model, _ = try_load(p("hf-compatible"))
    if model is not None:
        ours = json.loads(run(finercut, "run", "--model", p("dropped"), "--prompt", "Hello world",
                              "--json"))
        with torch.no_grad():
            logits = model(torch.tensor([ours["ids"]])).logits[0, -1].double()
        theirs = torch.log_softmax(logits, dim=-1)
        diff = (theirs - torch.tensor(ours["logprobs"], dtype=torch.float64)).abs().max().item()
        same = diff <= 1e-4
        print(f"{'ok' if same else 'FAIL'}: hf-compatible in transformers vs the dropped export in "
              f"finercut ({len(ours['removed_sublayers'])} sublayers removed): next-token "
              f"log-probabilities differ by at most {diff:.2e}")
        if not same:
            failures.append("hf-compatible logits")

    for like in args.like:
        failures += check_like(finercut, p, calib, like, args.blocks)

    # Control: the dropped export under the source's model_type loads, with random tensors.
    control = p("dropped-unmarked")
    shutil.rmtree(control, ignore_errors=True)
    shutil.copytree(p("dropped"), control)
    config = json.load(open(os.path.join(control, "config.json")))
    config["model_type"] = config["finercut"]["model_type"]
    config["architectures"] = config["finercut"]["architectures"]
    json.dump(config, open(os.path.join(control, "config.json"), "w"))
    os.rename(os.path.join(control, "finercut-dropped.safetensors"),
              os.path.join(control, "model.safetensors"))
    model, info = try_load(control)
    missing = [] if model is None else info["missing_keys"]
    print(f"{'ok' if missing else 'FAIL'}: control: the dropped export as model_type "
          f"{config['model_type']!r} in model.safetensors ({safetensors_format(control)}) "
          f"{'loads with ' + str(len(missing)) + ' tensors missing (randomly initialised)' if missing else 'did not load: ' + str(info)}")
    if not missing:
        failures.append("control")

    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    if failures:
        print(f"FAILED: {', '.join(failures)}")
        return 1
    print("all as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
