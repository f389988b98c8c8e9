#!/usr/bin/env bash
# Issue 16's GPU check, one prepared script for a GPU machine that has only what this tree carries
# (its own Python and torch, no ROS, no network): it prints the environment, installs what is
# missing from wheels carried in the tree, runs the CUDA tests (the Triton attention kernel
# natively, the pipeline's GPU data path) and the GPU rows of benchmarks/gpu_pipeline.py, and
# writes everything under $OUT, all within GPU_CHECK_BUDGET_S seconds (default 280: under 5 min).
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#
# Environment:
#   OUT                 where results go (default: gpu_check_out/ in the repository)
#   LMANET_WHEELS       wheels to install missing packages from (default: wheels/ in the
#                       repository): numpy, opencv-python-headless, triton, tqdm, pytest and its
#                       dependencies; whatever is missing there is skipped and reported
#   PYTHON              the interpreter (default python3)
#   GPU_CHECK_BUDGET_S  the whole script's time budget in seconds (default 280)
# Results under $OUT: gpu_check.log (everything printed), environment.txt, cuda_tests.xml
# (junit), gpu_pipeline.json (the benchmark's rows), gpu_check.json (each step's exit status
# and seconds, the environment in short).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
WHEELS=${LMANET_WHEELS:-$ROOT/wheels}
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET_S:-280}
START=$SECONDS
SITE=${TMPDIR:-/tmp}/lmanet_gpu_check_site   # installed packages (not under $OUT: not returned)
mkdir -p "$SITE"
STEPS=$OUT/steps.tsv
: > "$STEPS"
exec > >(tee "$OUT/gpu_check.log") 2>&1

export PYTHONPATH="$ROOT:$ROOT/test:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1   # no plugin of that environment (none is needed)
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-${TMPDIR:-/tmp}/lmanet_triton_cache}
unset TRITON_INTERPRET LMANET_ATTENTION

left() { echo $((BUDGET - (SECONDS - START))); }

# step NAME SECONDS COMMAND...: run COMMAND under timeout (at most what the budget has left),
# record its exit status and duration in $STEPS.
step() {
    local name=$1 limit=$2
    shift 2
    local remaining
    remaining=$(left)
    if ((remaining < limit)); then limit=$remaining; fi
    if ((limit <= 5)); then
        echo "== $name: skipped (time budget spent)"
        printf '%s\tskipped\t0\n' "$name" >> "$STEPS"
        return
    fi
    echo "== $name (timeout ${limit}s)"
    local began=$SECONDS
    timeout -k 5 "$limit" "$@"
    local rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - began))" >> "$STEPS"
    echo "== $name: exit $rc after $((SECONDS - began))s"
}

environment() {
    echo "python3 --version: $($PY --version 2>&1)"
    echo "--- nvidia-smi"
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    echo "--- torch"
    $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
"available", torch.cuda.is_available(),
"device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)' 2>&1 \
        || echo "torch: does not import"
    echo "--- pip list"
    $PY -m pip list 2>&1 || echo "pip: not available"
}

# install MODULE PACKAGE: PACKAGE from $WHEELS into $SITE unless MODULE imports already
# (without dependencies: each one needed is listed; pip, or unzipping a matching wheel).
install() {
    local module=$1 package=$2
    if $PY -c "import $module" 2>/dev/null; then
        echo "have $module"
        return
    fi
    if [ ! -d "$WHEELS" ]; then
        echo "missing $module: no wheel directory $WHEELS"
        return
    fi
    if $PY -m pip --version >/dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps --find-links "$WHEELS" --target "$SITE" \
            "$package" && echo "installed $package" && return
    fi
    # no pip (or pip failed): unzip a wheel of this package for this Python, if one is carried
    local wheel
    wheel=$($PY - "$WHEELS" "$package" <<'EOF'
import sys
from pathlib import Path
folder, name = Path(sys.argv[1]), sys.argv[2].replace("-", "_").lower()
tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
for wheel in sorted(folder.glob("*.whl")):
    parts = wheel.name[:-4].split("-")
    if parts[0].lower() == name and (tag in parts[-3] or parts[-3].startswith("py3")):
        print(wheel)
        break
EOF
)
    if [ -n "$wheel" ] && $PY -m zipfile -e "$wheel" "$SITE"; then
        echo "unpacked $(basename "$wheel")"
    else
        echo "missing $module: no usable wheel of $package in $WHEELS"
    fi
}

echo "== gpu_check in $ROOT, results in $OUT, budget ${BUDGET}s, wheels $WHEELS"
environment | tee "$OUT/environment.txt"
echo "== installing what is missing"
for pair in numpy:numpy cv2:opencv-python-headless tqdm:tqdm triton:triton \
            packaging:packaging pluggy:pluggy iniconfig:iniconfig pytest:pytest; do
    install "${pair%%:*}" "${pair#*:}"
done
if [ "$($PY -c 'import sys; print(sys.version_info < (3, 11))')" = True ]; then
    install exceptiongroup exceptiongroup
    install tomli tomli
fi
$PY -c 'import lmanet_ros.pipeline, lmanet_ros.models.attention_triton as t; print("lmanet_ros imports;", t.load())' \
    || echo "lmanet_ros does not import"

# -o addopts="": no --timeout (pytest-timeout may be absent; `timeout` bounds the run instead)
step "cuda tests" 150 $PY -m pytest -p no:cacheprovider -o addopts="" -m "not slow" -q -rs \
    --junitxml="$OUT/cuda_tests.xml" test/models/test_attention_triton.py \
    test/pipeline/test_pipeline_cuda.py test/pipeline/test_pipeline_device.py \
    test/pipeline/test_pipeline.py test/pipeline/test_gpu_check.py
step "gpu benchmark" 110 $PY benchmarks/gpu_pipeline.py --device cuda --size 512x1024 \
    --warmup 5 --repeats 30 --json "$OUT/gpu_pipeline.json"

$PY - "$STEPS" "$OUT/gpu_check.json" "$((SECONDS - START))" <<'EOF'
import json
import platform
import sys
steps = [dict(zip(("step", "exit", "seconds"), line.split("\t")))
         for line in open(sys.argv[1]).read().splitlines() if line]
try:
    import torch
    env = {"torch": torch.__version__, "cuda": torch.version.cuda,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
except Exception as error:  # report, never fail the summary
    env = {"torch": f"does not import: {error}"}
env["python"] = platform.python_version()
json.dump({"environment": env, "steps": steps, "seconds": int(sys.argv[3])},
          open(sys.argv[2], "w"), indent=2)
print(json.dumps(steps))
EOF
echo "== gpu_check done in $((SECONDS - START))s"
# exit 1 when a step that ran failed (a skipped step is not a failure)
awk -F'\t' '$2 != "skipped" && $2 != 0 {failed = 1} END {exit failed}' "$STEPS"
