#!/usr/bin/env bash
# The CUDA device check of finercut, in one call on a machine with an NVIDIA GPU, Python 3 with
# PyTorch (CUDA) + transformers + safetensors, and the NVIDIA libraries in site-packages; no Rust
# and no network needed. Prepared by `cargo xtask device-check`, which builds bin/ and computes the
# CPU side of every comparison into expected/ (see docs/PERFORMANCE.md, "CUDA").
#
# Stages, most valuable first; each starts only if the time it needs is left before the overall
# deadline (DEADLINE_S, default 420 s), and runs under a timeout that ends at the deadline:
#   env           versions of the driver, NVRTC, cuBLAS, PyTorch; ldd and SHA-256 of the binaries
#   ops           bin/gpu-test-tensor: every operation on the GPU against the CPU backend
#   models        bin/gpu-test-search (tiny random models; the SmolLM2-shaped CPU run is skipped)
#   cli-parity    the tiny model (`finercut make-tiny`, its hash checked against expected/): last
#                 position log-probabilities and the greedy removal order on cuda against the CPU's
#   torch-parity  PyTorch at finercut's precision (f32, and f32 activations with bf16 weights and
#                 GEMM inputs) against finercut on the GPU: log-probabilities and the chosen unit
#   timing-8b     a Llama-3-8B-shaped bf16 model: one greedy step (elimination, then exhaustive,
#                 compared by order and score tolerance) and the PyTorch reference step in bf16
# $OUT receives results.json (rewritten after every stage) and logs.tar.gz (every log and output,
# repacked after every stage): two files.
#
# `run.sh --dry-run` runs all of it without a GPU: every command that needs the GPU or PyTorch is
# replaced by a stub that writes the CPU side as its output (FINERCUT_DRY_FAIL=<stage> makes that
# stage's stub fail, FINERCUT_DRY_SLEEP=<s> makes each stub take s seconds), so the bookkeeping,
# the comparisons and the deadline are exercised (`cargo xtask device-check --dry-run`, and a test
# of xtask).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/out}
WORK=${WORK:-/tmp/finercut-device}
DEADLINE_S=${DEADLINE_S:-420}
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
export HERE OUT WORK DRY
export EXP=$HERE/expected GPU=$WORK/gpu CHECKS=$WORK/checks LOGS=$WORK/logs
rm -rf "$GPU" "$CHECKS" "$LOGS"
mkdir -p "$OUT" "$GPU" "$CHECKS" "$LOGS"
rm -f "$OUT/results.json" "$OUT/logs.tar.gz"
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( DEADLINE_S - $(elapsed) )); }
check() { python3 "$HERE/check.py" "$@"; }
export -f check
# Settings of the comparisons (the CPU side in expected/ was computed with the same ones).
meta() { python3 -c "import json,sys; print(json.load(open('$EXP/meta.json'))[sys.argv[1]])" "$1"; }
export -f meta

check init "$OUT/results.json" --deadline "$DEADLINE_S" --dry-run "$DRY"

pack() {
    tar -czf "$OUT/logs.tar.gz.tmp" -C "$WORK" logs checks gpu 2>/dev/null
    mv -f "$OUT/logs.tar.gz.tmp" "$OUT/logs.tar.gz"
}

# In a dry run: a stub instead of a GPU command.
dry_stub() {
    sleep "${FINERCUT_DRY_SLEEP:-0}"
    if [ "${FINERCUT_DRY_FAIL:-}" = "$1" ]; then
        echo "dry run: stage $1 fails on request"
        return 1
    fi
    echo "dry run: stub for stage $1"
}
export -f dry_stub

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
    fi
done
export LD_LIBRARY_PATH="$LIBDIR$EXTRA:${LD_LIBRARY_PATH:-}"
chmod +x "$HERE"/bin/* 2>/dev/null

# stage NAME NEED_S LIMIT_S: runs stage_NAME (its output in logs/NAME.log) if NEED_S seconds are
# left, under a timeout of LIMIT_S capped at the deadline; records it in results.json and repacks.
stage() {
    # FINERCUT_NEED_S overrides every stage's need (for tests of the deadline in dry runs).
    local name=$1 need=${FINERCUT_NEED_S:-$2} limit=$3 l rc status t0 t1 detail=""
    l=$(left)
    # With no time left a stage never starts: `timeout 0` would mean no limit at all.
    if [ "$l" -le 0 ] || [ "$l" -lt "$need" ]; then
        check record "$OUT/results.json" "$name" skipped -1 0 \
            --detail "deadline: ${l} s left, the stage needs ${need} s"
        pack
        return
    fi
    [ "$limit" -gt "$l" ] && limit=$l
    t0=$(date +%s.%N)
    timeout -k 5 "$limit" bash -c "set -o pipefail; stage_$name" > "$LOGS/$name.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    case $rc in
        0) status=passed ;;
        124 | 137) status=timeout; detail="killed after ${limit} s" ;;
        *) status=failed; detail="exit $rc; see logs/$name.log" ;;
    esac
    local checks=()
    for f in "$CHECKS/$name".*.json; do
        [ -e "$f" ] && checks+=(--checks "$f")
    done
    check record "$OUT/results.json" "$name" "$status" "$rc" \
        "$(awk "BEGIN{print $t1 - $t0}")" ${detail:+--detail "$detail"} "${checks[@]}"
    echo "[$(elapsed) s] $name: $status" >&2
    pack
}

stage_env() {
    echo "== GPU"
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || true
    nvidia-smi || true
    echo "== libraries"
    ls -l "$LIBDIR"
    echo "== Python"
    python3 - <<'PY' || true
import importlib.metadata as md
for p in ("torch", "transformers", "safetensors", "nvidia-cublas-cu12", "nvidia-cuda-nvrtc-cu12",
          "nvidia-cuda-runtime-cu12"):
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "not installed")
try:
    import torch
    print("torch CUDA", torch.version.cuda, "available", torch.cuda.is_available())
except Exception as e:
    print("torch:", e)
PY
    echo "== binaries"
    for b in "$HERE"/bin/*; do
        echo "-- $b"
        sha256sum "$b"
        ldd "$b" 2>&1 || true
    done
    python3 - "$CHECKS/env.versions.json" "$LIBDIR" "$HERE/bin" <<'PY'
import glob, json, os, subprocess, sys
out, libdir, bindir = sys.argv[1:]
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
gpu = run("nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
          "--format=csv,noheader")
libs = {os.path.basename(p): os.path.realpath(p) for p in glob.glob(f"{libdir}/*")}
missing = {}
for b in glob.glob(f"{bindir}/*"):
    text = run("ldd", b) or ""
    missing[os.path.basename(b)] = [l.strip() for l in text.splitlines() if "not found" in l]
json.dump({"gpu": gpu, "libraries": libs, "ldd_not_found": missing,
           "ok": all(not m for m in missing.values())}, open(out, "w"), indent=1)
PY
}

stage_ops() {
    if [ "$DRY" = 1 ]; then dry_stub ops; else "$HERE/bin/gpu-test-tensor"; fi
}

stage_models() {
    if [ "$DRY" = 1 ]; then
        dry_stub models
    else
        "$HERE/bin/gpu-test-search" --nocapture --skip smollm2_shaped_model_gpu_equals_cpu
    fi
}

# finercut on the tiny model: `finercut run --json` and one greedy run, on cuda with --precision $1;
# outputs in $GPU/tiny-{run,prune}-$1.json (a dry run copies the CPU side).
tiny_gpu() {
    local p=$1 steps samples seq_len
    samples=$(meta samples)
    seq_len=$(meta seq_len)
    if [ "$DRY" = 1 ]; then
        cp "$EXP/tiny-run-cpu.json" "$GPU/tiny-run-$p.json"
        cp "$EXP/tiny-prune-cpu.json" "$GPU/tiny-prune-$p.json"
        return
    fi
    "$HERE/bin/finercut" run --model "$WORK/tiny" --device cuda --precision "$p" \
        --prompt "$(meta prompt)" --json > "$GPU/tiny-run-$p.json" || return 1
    "$HERE/bin/finercut" prune --model "$WORK/tiny" --device cuda --precision "$p" \
        --tokens "$EXP/tokens-tiny.json" --samples "$samples" --seq-len "$seq_len" --metric js \
        --ratio "$(meta ratio)" --exhaustive --force --out "$GPU/tiny-prune-$p.json"
}

stage_cli_parity() {
    if [ "$DRY" = 1 ]; then
        dry_stub cli_parity || return 1
    else
        rm -rf "$WORK/tiny"
        "$HERE/bin/finercut" make-tiny "$WORK/tiny" || return 1
        local sha
        sha=$(sha256sum "$WORK/tiny/model.safetensors" | cut -d' ' -f1)
        if [ "$sha" != "$(meta tiny_sha256)" ]; then
            echo "the tiny model differs from the one the CPU side was computed on: $sha"
            return 1
        fi
    fi
    tiny_gpu f32 || return 1
    local rc=0
    check logprobs "$EXP/tiny-run-cpu.json" "$GPU/tiny-run-f32.json" --tol 1e-4 \
        > "$CHECKS/cli_parity.logprobs.json" || rc=1
    check order "$EXP/tiny-prune-cpu.json" "$GPU/tiny-prune-f32.json" --score-tol 1e-4 \
        > "$CHECKS/cli_parity.order.json" || rc=1
    cat "$CHECKS"/cli_parity.*.json
    return $rc
}

# PyTorch's step and log-probabilities at precision $1 (f32 or bf16-emulated) on the tiny model.
torch_tiny() {
    local tp=$1 fp=$2
    if [ "$DRY" = 1 ]; then
        check dry-torch "$GPU/tiny-run-$fp.json" "$GPU/tiny-prune-$fp.json" --precision "$tp" \
            > "$GPU/torch-tiny-$tp.json"
    else
        python3 "$HERE/torch_step.py" "$WORK/tiny" --tokens "$EXP/tokens-tiny.json" \
            --precision "$tp" --ids "$GPU/tiny-run-$fp.json" > "$GPU/torch-tiny-$tp.json"
    fi
}

stage_torch_parity() {
    if [ "$DRY" = 1 ]; then dry_stub torch_parity || return 1; fi
    [ -f "$GPU/tiny-run-f32.json" ] || { echo "needs the outputs of cli-parity"; return 1; }
    tiny_gpu bf16 || return 1
    local rc=0
    torch_tiny f32 f32 || return 1
    check torch "$GPU/torch-tiny-f32.json" "$GPU/tiny-run-f32.json" "$GPU/tiny-prune-f32.json" \
        --tol 1e-4 --score-tol 1e-3 > "$CHECKS/torch_parity.f32.json" || rc=1
    torch_tiny bf16-emulated bf16 || return 1
    check torch "$GPU/torch-tiny-bf16-emulated.json" "$GPU/tiny-run-bf16.json" \
        "$GPU/tiny-prune-bf16.json" --tol 1e-2 --score-tol 1e-2 \
        > "$CHECKS/torch_parity.bf16.json" || rc=1
    cat "$CHECKS"/torch_parity.*.json
    return $rc
}

# Peak memory.used (MiB) of the GPU while process $1 runs.
poll_memory() {
    local peak=0 m
    while kill -0 "$1" 2>/dev/null; do
        m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1)
        [ -n "$m" ] && [ "$m" -gt "$peak" ] && peak=$m
        sleep 0.5
    done
    echo "$peak"
}
export -f poll_memory

stage_timing_8b() {
    local M8=$WORK/llama3-8b samples seq_len
    samples=$(meta samples_8b)
    seq_len=$(meta seq_len_8b)
    if [ "$DRY" = 1 ]; then
        dry_stub timing_8b || return 1
        cp "$EXP/tiny-prune-cpu.json" "$GPU/8b-elimination.json"
        cp "$EXP/tiny-prune-cpu.json" "$GPU/8b-exhaustive.json"
    else
        if [ ! -f "$M8/config.json" ]; then
            "$HERE/bin/finercut" make-tiny "$M8" --like llama-3-8b --force || return 1
        fi
        local v flag pid
        for v in elimination exhaustive; do
            flag=""
            [ "$v" = exhaustive ] && flag=--exhaustive
            "$HERE/bin/finercut" prune --model "$M8" --device cuda --precision bf16 \
                --tokens "$EXP/tokens-8b.json" --samples "$samples" --seq-len "$seq_len" \
                --metric js --ratio 0.0234375 $flag --force --out "$GPU/8b-$v.json" &
            pid=$!
            echo "peak GPU memory of finercut ($v): $(poll_memory $pid) MiB"
            wait $pid || return 1
        done
        python3 "$HERE/torch_step.py" "$M8" --tokens "$EXP/tokens-8b.json" --precision bf16 \
            > "$GPU/torch-8b-bf16.json" &
        pid=$!
        echo "peak GPU memory of PyTorch: $(poll_memory $pid) MiB"
        wait $pid
    fi
    local rc=0
    # cuBLAS's GEMM algorithm is not pinned (CUBLAS_GEMM_DEFAULT may pick other kernels for other
    # row counts), so elimination and exhaustive search are compared by order and score tolerance.
    check order "$GPU/8b-exhaustive.json" "$GPU/8b-elimination.json" --score-tol 1e-3 \
        > "$CHECKS/timing_8b.elimination_vs_exhaustive.json" || rc=1
    check timing --elimination "$GPU/8b-elimination.json" --exhaustive "$GPU/8b-exhaustive.json" \
        --torch "$GPU/torch-8b-bf16.json" --samples "$samples" --seq-len "$seq_len" \
        > "$CHECKS/timing_8b.step.json" || rc=1
    cat "$CHECKS"/timing_8b.*.json
    return $rc
}
export -f stage_env stage_ops stage_models tiny_gpu stage_cli_parity torch_tiny \
    stage_torch_parity stage_timing_8b
export LIBDIR

stage env 0 30
stage ops 60 120
stage models 60 120
stage cli_parity 40 90
stage torch_parity 60 120
stage timing_8b 150 300
echo "[$(elapsed) s] done: $OUT/results.json" >&2
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['verdict']); sys.exit(r['verdict']!='passed')" \
    "$OUT/results.json"
