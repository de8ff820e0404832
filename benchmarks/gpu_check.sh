#!/usr/bin/env bash
# The GPU check in one command: every cuda/tensorrt-marked test with skips made failures, then the
# GPU benchmarks, all into one results file, offline. Run on an H200 on 2026-12-04 (about 5 minutes
# for every step; benchmarks/RESULTS.md, "First GPU runs").
#
#   benchmarks/gpu_check.sh [RESULTS_FILE]        # default: gpu-check-<UTC time>.txt here
#
# On a GPU image that lacks some of gtacity's dependencies (PyAV, onnxconverter-common, ...), put
# their wheels in .whl/ first (or point GTACITY_WHEELS at a folder of them); they are installed
# into a private folder, never into the system. GTACITY_REAL_DATA: a folder of real frames (with
# gta5/) for the fp16 PSNR test; without it that test uses synthetic frames and says so.
# The exit status is non-zero when a test fails or a benchmark path disagrees with torch fp32.
set -uo pipefail
results=$(realpath -m "${1:-gpu-check-$(date -u +%Y%m%dT%H%MZ).txt}")
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
wheels=${GTACITY_WHEELS:-.whl}
work=$(mktemp -d /tmp/gtacity-gpu-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
status=0
incomplete=0

say() { echo "$*" | tee -a "$results"; }
step() { say ""; say "== $* ($(date -u +%H:%M:%S) UTC)"; }

: >"$results"
say "gtacity GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$results"

step "install what is missing (offline)"
missing=$("$py" - <<'EOF'
import importlib.util
need = {"av": "av", "click": "click", "tqdm": "tqdm", "safetensors": "safetensors",
        "onnxconverter_common": "onnxconverter-common", "pytest": "pytest"}
print(" ".join(dist for mod, dist in need.items() if importlib.util.find_spec(mod) is None))
EOF
)
if [ -n "$missing" ]; then
    say "missing: $missing"
    found=()
    for dist in $missing; do
        wheel=$(compgen -G "$wheels/${dist//-/_}-*.whl" | head -n 1)
        [ -n "$wheel" ] || { say "error: no $dist wheel in $wheels/; copy one there (see /work/shared/wheels-gpu/README.md)"; exit 1; }
        found+=("$wheel")
    done
    "$py" -m pip install -q --no-index --no-deps --no-compile --target "$work/site" "${found[@]}" 2>&1 \
        | tee -a "$results" || { say "error: installing ${found[*]} failed"; exit 1; }
    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$py" -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tee -a "$results" \
    || { say "error: pip install --no-deps -e . failed"; exit 1; }
gtacity=("$py" -m gtacity)
"${gtacity[@]}" --version | tee -a "$results" || { say "error: gtacity does not import"; exit 1; }
if ! "$py" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    say "error: torch sees no CUDA GPU here; this check needs one (the CPU tests are the plain pytest run)"
    exit 1
fi

# GTACITY_GPU_CHECK_STEPS picks steps (default all): tests model profile kernels colour e2e seg
steps=" ${GTACITY_GPU_CHECK_STEPS:-tests model profile kernels colour e2e seg} "
want() { [[ "$steps" == *" $1 "* ]]; }
# Each step has a time limit (seconds, GTACITY_STEP_LIMIT), so that one hang cannot eat a lease.
limit=${GTACITY_STEP_LIMIT:-240}
run() { timeout -k 10 "$limit" "$@"; }

if "$py" -c "import tensorrt" 2>/dev/null; then
    marks="cuda or tensorrt"
else
    marks="cuda and not tensorrt"
    incomplete=1
    say "note: TensorRT is not installed here, so the tensorrt-marked tests and paths are not run: this check is incomplete"
fi
if want tests; then
    # Only the modules that hold such tests: the others import what a GPU image may lack (OpenVINO, Ray).
    mapfile -t files < <(grep -lE "mark\.(cuda|tensorrt)|\"cuda\"" tests/test_*.py)
    step "$marks tests in ${#files[@]} modules, GTACITY_REQUIRE_CUDA=1 (a skip is a failure)"
    GTACITY_REQUIRE_CUDA=1 run "$py" -m pytest -q -rfE -m "$marks" -p no:cacheprovider "${files[@]}" 2>&1 \
        | tee -a "$results"; [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

if want model; then
    step "model only: every fp16 path vs eager fp32 batch 1, ngf 64, 1024x512, batch 8"
    run "$py" benchmarks/gpu_bench.py --json "${results%.txt}-model.json" 2>&1 | tee -a "$results"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
if want profile; then
    step "eager fp16: layout and instance norms, side by side"
    run "$py" benchmarks/gpu_profile.py --profile 12 2>&1 | tee -a "$results"; [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

if want kernels; then
    step "Triton pixel kernels vs copy bandwidth and the unfused torch sequence, 1080p, batch 8"
    run "$py" benchmarks/kernels_bench.py 2>&1 | tee -a "$results"; [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

if want colour; then
    colour_clip=()
    if [ -z "${GTACITY_REAL_DATA:-}" ] && [ ! -d ../shared/data/real/gta5 ]; then
        colour_clip=(--clip "$work/drive1080.mp4")  # no real frames here: the synthetic demo clip, said so
        "${gtacity[@]}" demo-clip "$work/drive1080.mp4" --seconds 4 --size 1920x1080 2>&1 | tee -a "$results"
    fi
    step "colour on the GPU: a 1080p H.264 clip (${colour_clip[*]:-real frames}), plane path vs RGB path (swscale), fp16, batch 8"
    run "$py" benchmarks/colour_path.py --size 1920x1080 --frames 96 --device cuda --precision fp16 \
        --batch-size 8 "${colour_clip[@]}" 2>&1 | tee -a "$results"; [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

if want e2e; then
    step "end to end: a 1024x512 H.264 clip and the same frames as PNGs, batch 8, 1 and 3 streams"
    clip="$work/drive.mp4"
    "${gtacity[@]}" demo-clip "$clip" --seconds 12 --size 1024x512 2>&1 | tee -a "$results"
    "$py" - "$clip" "$work/frames" <<'EOF'
import sys
from pathlib import Path
import cv2
from gtacity.engine.media.sources import open_source
out = Path(sys.argv[2]); out.mkdir()
with open_source(sys.argv[1]) as source:
    for frame in source:
        cv2.imwrite(str(out / f"{frame.index:05d}.png"), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
EOF
    for input in "$clip" "$work/frames"; do
        for streams in 1 3; do
            say "-- $(basename "$input"), --streams $streams"
            run "${gtacity[@]}" bench --e2e "$input" --device cuda --batch-size 8 --streams "$streams" \
                --repeats "${GTACITY_E2E_REPEATS:-3}" -q 2>&1 | tee -a "$results"; [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
        done
    done
fi

if want seg; then
    step "segmentation: deeplabv3-mobilenet (AMP, channels-last) on the labelled synthetic game, 300 steps"
    "${gtacity[@]}" demo-clip "$work/game" --labels --seconds 40 --fps 1 --size 1024x512 2>&1 | tee -a "$results"
    "${gtacity[@]}" demo-clip "$work/game_val" --labels --seconds 10 --fps 1 --size 1024x512 --seed 1 --split val \
        2>&1 | tee -a "$results"
    run "${gtacity[@]}" eval segmentation --train "$work/game" --val "$work/game_val" --recipe deeplabv3-mobilenet \
        --steps 300 --device cuda --workers 4 --out "$work/seg" --json "$work/seg.json" -q 2>&1 | tail -n 25 \
        | tee -a "$results"; [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    if [ -n "${GTACITY_REAL_DATA:-}" ] && [ -d "$GTACITY_REAL_DATA/cityscapes/gtFine" ]; then
        say "-- the 8 real Cityscapes frames (train on them, score on them: a check that the recipe runs, not a result)"
        mkdir -p "$work/real8/leftImg8bit" "$work/real8/gtFine"
        ln -s "$(realpath "$GTACITY_REAL_DATA")"/cityscapes/leftImg8bit/aachen_*.png "$work/real8/leftImg8bit/"
        ln -s "$(realpath "$GTACITY_REAL_DATA")"/cityscapes/gtFine/aachen_*_labelIds.png "$work/real8/gtFine/"
        "${gtacity[@]}" eval segmentation --train "$work/real8" --val "$work/real8" \
            --recipe deeplabv3-resnet50 --steps 200 --device cuda --out "$work/seg_real" -q 2>&1 | tail -n 3 \
            | tee -a "$results"; [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    fi
fi

if [ "$incomplete" -eq 1 ]; then say ""; say "incomplete: TensorRT was not installed, so its tests and paths did not run"; fi
step "done: status $status"
exit $status
