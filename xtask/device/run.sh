#!/usr/bin/env bash
# The CUDA device check of finercut, in one call on a machine with an NVIDIA GPU, Python 3 with
# PyTorch (CUDA) + transformers + safetensors, and the NVIDIA libraries in site-packages; no Rust
# and no network needed. Prepared by `cargo xtask device-check` (which builds bin/ here); see
# docs/PERFORMANCE.md, "CUDA". Writes $OUT/results.json (default: out/ beside this script).
#
# Steps (about 6-8 minutes on one H200):
#  1. bin/gpu-test-tensor: every operation on the GPU against the CPU backend.
#  2. bin/gpu-test-search: a tiny random model and a SmolLM2-shaped one (f32), GPU vs CPU logits
#     and the first greedy steps' removal order (10 steps at 4 x 128 on the SmolLM2 shape).
#  3. A Llama-3-8B-shaped random bf16 checkpoint (PyTorch), one greedy step at 10 x 256:
#     finercut (--device cuda --precision bf16; with elimination, and in round 1 also
#     --exhaustive) and the PyTorch reference procedure (torch_step.py), interleaved; wall time,
#     GEMM TFLOP/s, peak GPU memory.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/out}
WORK=${WORK:-/tmp/finercut-device}
ROUNDS=${ROUNDS:-2}
BUDGET_S=${BUDGET_S:-440}
mkdir -p "$OUT" "$WORK"
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
log() { echo "[$(elapsed)s] $*" | tee -a "$OUT/log.txt" >&2; }

# The NVIDIA libraries of the Python environment, under the names cudarc looks for.
LIBDIR=$WORK/lib
mkdir -p "$LIBDIR"
SITE=$(python3 -c 'import nvidia, os; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
EXTRA=""
for name in cublas cublasLt nvrtc; do
    f=$(ls "$SITE"/*/lib/lib$name.so.* 2>/dev/null | sort -V | tail -1)
    if [ -n "$f" ]; then
        ln -sf "$f" "$LIBDIR/lib$name.so"
        EXTRA="$EXTRA:$(dirname "$f")"
        log "lib$name: $f"
    else
        log "lib$name not found under $SITE"
    fi
done
export LD_LIBRARY_PATH="$LIBDIR$EXTRA:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1 || true
log "GPU: $(cat "$OUT/gpu.txt")"

# 1-2. The GPU test binaries.
for t in tensor search; do
    log "gpu-test-$t"
    timeout 300 "$HERE/bin/gpu-test-$t" --nocapture > "$OUT/gpu-test-$t.txt" 2>&1
    echo $? > "$OUT/gpu-test-$t.rc"
    log "gpu-test-$t: exit $(cat "$OUT/gpu-test-$t.rc"); $(grep 'test result' "$OUT/gpu-test-$t.txt")"
done

# 3. The Llama-3-8B-shaped bf16 model.
"$HERE/bin/finercut" make-tiny "$WORK/tiny" > /dev/null
M8=$WORK/llama3-8b
if [ ! -f "$M8/model.safetensors" ]; then
    log "writing the random Llama-3-8B-shaped checkpoint"
    timeout 240 python3 "$HERE/make_models.py" llama3-8b "$M8" --dtype bfloat16 \
        --tokenizer "$WORK/tiny/tokenizer.json" >> "$OUT/log.txt" 2>&1 || log "make_models failed"
fi
python3 - "$WORK/tokens.json" <<'PY'
import json, random, sys
random.seed(0)
json.dump([[random.randrange(256) for _ in range(256)] for _ in range(10)], open(sys.argv[1], "w"))
PY

poll_memory() { # peak memory.used (MiB) while $1 runs
    local peak=0 m
    while kill -0 "$1" 2>/dev/null; do
        m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1)
        [ -n "$m" ] && [ "$m" -gt "$peak" ] && peak=$m
        sleep 0.2
    done
    echo "$peak"
}

for round in $(seq 1 "$ROUNDS"); do
    if [ "$round" -gt 1 ] && [ "$(elapsed)" -gt "$BUDGET_S" ]; then
        log "round $round skipped (time budget)"
        break
    fi
    # Elimination is on by default; round 1 also runs the step --exhaustive (every candidate on
    # every row, the work the PyTorch reference does).
    variants="default"
    [ "$round" -eq 1 ] && variants="default exhaustive"
    for v in $variants; do
        flag=""
        [ "$v" = exhaustive ] && flag="--exhaustive"
        tag="$round"
        [ "$v" = exhaustive ] && tag="$round-exhaustive"
        log "round $round: finercut ($v)"
        t0=$(date +%s.%N)
        timeout 200 "$HERE/bin/finercut" prune --model "$M8" --device cuda --precision bf16 \
            --tokens "$WORK/tokens.json" --samples 10 --seq-len 256 --metric js \
            --ratio 0.0234375 $flag --force \
            --out "$OUT/finercut-8b-$tag.json" > "$OUT/finercut-8b-$tag.log" 2>&1 &
        pid=$!
        peak=$(poll_memory $pid)
        wait $pid
        rc=$?
        t1=$(date +%s.%N)
        echo "{\"rc\": $rc, \"process_s\": $(awk "BEGIN{print $t1 - $t0}"), \"peak_mib\": $peak}" \
            > "$OUT/finercut-8b-$tag.run.json"
        log "finercut ($v): exit $rc, $(cat "$OUT/finercut-8b-$tag.run.json")"
    done
    log "round $round: PyTorch"
    timeout 200 python3 "$HERE/torch_step.py" "$M8" --tokens "$WORK/tokens.json" \
        > "$OUT/torch-8b-$round.json" 2> "$OUT/torch-8b-$round.log" &
    pid=$!
    peak=$(poll_memory $pid)
    wait $pid
    echo "{\"rc\": $?, \"peak_mib\": $peak}" > "$OUT/torch-8b-$round.run.json"
    log "torch: $(cat "$OUT/torch-8b-$round.json") $(cat "$OUT/torch-8b-$round.run.json")"
done

python3 - "$OUT" <<'PY'
import glob, json, os, re, sys
out = sys.argv[1]
def read(p, default=None):
    try:
        with open(p) as f:
            return f.read()
    except OSError:
        return default
res = {"gpu": (read(f"{out}/gpu.txt") or "").strip(), "tests": {}, "llama3_8b_step": []}
for t in ("tensor", "search"):
    text = read(f"{out}/gpu-test-{t}.txt", "")
    res["tests"][t] = {
        "exit": int((read(f"{out}/gpu-test-{t}.rc") or "1").strip() or 1),
        "summary": " ".join(re.findall(r"test result: .*", text)),
        "notes": re.findall(r"^(?:logits|greedy|bf16).*$", text, re.M),
        "failures": re.findall(r"panicked at .*\n.*", text)[:10],
    }
# GEMM FLOPs of one greedy step on the 8B shape: forward-equivalents x 2 x tokens x the
# non-embedding matrix parameters, plus the LM head over every row scored (every candidate's rows
# with --exhaustive; under elimination the step records the rows it scored).
d, ffn, blocks, kvd, vocab, tokens = 4096, 14336, 32, 1024, 128256, 10 * 256
per_block = d * d * 2 + 2 * d * kvd + 3 * d * ffn
def finercut_entry(stem):
    run = json.loads(read(f"{stem}.run.json"))
    result = read(f"{stem}.json")
    if result:
        steps = json.loads(result).get("steps", [])
        if steps:
            s = steps[0]
            fe, wall = s["forward_equivalents"], s["wall_s"]
            elim = s.get("elimination")
            rows = elim["rows_scored"] if elim else s["candidates"] * tokens
            flops = fe * 2 * tokens * blocks * per_block + 2 * rows * vocab * d
            run.update(step_s=wall, forward_equivalents=fe, choice=s["unit"], score=s["score"],
                       rows_scored=rows, elimination=elim, gemm_tflop=flops / 1e12,
                       tflops_lower_bound=flops / wall / 1e12)
    return run
for r in sorted(glob.glob(f"{out}/finercut-8b-*.run.json")):
    n = r[len(f"{out}/finercut-8b-"):-len(".run.json")]
    if not n.isdigit():
        continue
    entry = {"round": int(n), "finercut": finercut_entry(f"{out}/finercut-8b-{n}")}
    if os.path.exists(f"{out}/finercut-8b-{n}-exhaustive.run.json"):
        entry["finercut_exhaustive"] = finercut_entry(f"{out}/finercut-8b-{n}-exhaustive")
    t = read(f"{out}/torch-8b-{n}.json")
    if t and t.strip():
        try:
            entry["torch"] = json.loads(t.strip().splitlines()[-1])
            entry["torch"].update(json.loads(read(f"{out}/torch-8b-{n}.run.json")))
        except ValueError:
            entry["torch"] = {"error": t[-500:]}
    f, p = entry.get("finercut", {}), entry.get("torch", {})
    if "step_s" in f and p.get("step_s"):
        entry["speedup"] = min(p["step_s"]) / f["step_s"]
        x = entry.get("finercut_exhaustive", {})
        if "step_s" in x:
            entry["speedup_exhaustive"] = min(p["step_s"]) / x["step_s"]
    res["llama3_8b_step"].append(entry)
with open(f"{out}/results.json", "w") as f:
    json.dump(res, f, indent=1)
print(json.dumps(res, indent=1))
PY
log "done: $OUT/results.json"
