#!/usr/bin/env bash
# Create (or reuse) the PyTorch reference environment: <repo>/.venv-reference (gitignored).
#
#   bash benches/reference/setup_venv.sh          # CPU-only: torch without its CUDA wheels (586 MB download)
#   bash benches/reference/setup_venv.sh --full   # torch with all its nvidia-*/triton wheels (~2.9 GB download)
#   bash benches/reference/setup_venv.sh --force  # rebuild even if an up-to-date venv is there
#
# Wheels are kept in a wheelhouse (default ~/.cache/finercut/reference-wheels, override with
# FINERCUT_REFERENCE_WHEELS) and checked against the SHA-256 hashes in requirements.txt; once it is
# filled, a rebuild needs no network. The venv location can be overridden with FINERCUT_REFERENCE_VENV,
# the interpreter with PYTHON (must be CPython 3.11 on Linux x86_64: the hashes are for those wheels).
#
# Default mode installs every pinned wheel with --no-deps, so torch's CUDA dependencies are skipped,
# then make_cuda_stubs.py writes no-op stand-ins for the CUDA shared libraries torch links against
# (see that file). Needs cc/readelf/nm; without them the script falls back to --full.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${FINERCUT_REFERENCE_VENV:-$root/.venv-reference}"
wheels="${FINERCUT_REFERENCE_WHEELS:-$HOME/.cache/finercut/reference-wheels}"
python="${PYTHON:-python3}"
mode=slim
force=0
for arg in "$@"; do
  case "$arg" in
    --full) mode=full ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "setup_venv.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
if [ "$mode" = slim ] && ! { command -v cc && command -v readelf && command -v nm; } >/dev/null 2>&1; then
  echo "setup_venv.sh: cc/readelf/nm not found: installing torch's real CUDA wheels instead (--full)" >&2
  mode=full
fi

stamp="$venv/.finercut-reference"
want="$mode $(cat "$here/requirements.txt" "$here/make_cuda_stubs.py" | sha256sum | cut -d' ' -f1)"
if [ "$force" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && "$venv/bin/python" -c 'import torch, transformers, safetensors' >/dev/null 2>&1; then
  echo "setup_venv.sh: reusing $venv ($mode)"
  exit 0
fi

mkdir -p "$wheels"
req="$here/requirements.txt"
pip_dl=("$python" -m pip download --disable-pip-version-check --only-binary=:all: -d "$wheels")
if [ "$mode" = slim ]; then
  # Offline first (wheelhouse only), then the index for whatever is missing; hashes checked either way.
  if ! "${pip_dl[@]}" --no-deps --require-hashes --no-index --find-links "$wheels" -r "$req" >/dev/null 2>&1; then
    "${pip_dl[@]}" --no-deps --require-hashes --find-links "$wheels" -r "$req"
  fi
else
  # torch's CUDA dependencies are not pinned here: let pip resolve torch==2.15.0's own requirements.
  full_req="$(mktemp)"
  sed -e 's/ --hash=[^ ]*//g' "$req" > "$full_req"
  if ! "${pip_dl[@]}" --no-index --find-links "$wheels" -r "$full_req" >/dev/null 2>&1; then
    "${pip_dl[@]}" --find-links "$wheels" -r "$full_req"
  fi
fi

rm -rf "$venv"
"$python" -m venv "$venv"
if [ "$mode" = slim ]; then
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-index --find-links "$wheels" \
    --no-deps --require-hashes -r "$req"
  "$venv/bin/python" "$here/make_cuda_stubs.py"
else
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-index --find-links "$wheels" -r "$full_req"
  rm -f "$full_req"
fi

"$venv/bin/python" - <<'EOF'
import torch, transformers, safetensors, tokenizers
x = torch.randn(64, 64)
assert torch.allclose(x @ torch.eye(64), x)
print(f"setup_venv.sh: torch {torch.__version__} (cuda available: {torch.cuda.is_available()}), "
      f"transformers {transformers.__version__}, safetensors {safetensors.__version__}, "
      f"tokenizers {tokenizers.__version__}")
EOF
echo "$want" > "$stamp"
du -sh "$venv" | sed 's/^/setup_venv.sh: venv size /'
