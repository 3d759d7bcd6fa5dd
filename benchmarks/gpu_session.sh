#!/usr/bin/env bash
# Every GPU measurement of the benchmark suite in one command, ordered by what matters most and
# sized to finish in about 10 minutes on one GPU.
#
# Why one script: GPU time is usually short and paid for from the start, so the measurements
# run unattended, write their results as they go, and each part has its own `timeout`: a part
# that runs long loses only itself. Results land in benchmarks/results/ and, when $OUT names a
# folder, are also packed there (one archive plus the log).
#
#   bash benchmarks/gpu_session.sh            # on the GPU machine (python3 with torch there)
#   SMOKE=1 bash benchmarks/gpu_session.sh    # seconds, on the CPU (tests/test_benchmarks.py)
#
# A machine with torch, torchvision, pandas and scikit-learn but without hydra-core/omegaconf
# can take them as wheels: `make gpu-wheels` puts them in .whl/, and this script installs from
# .whl/ when that folder exists (docs/benchmarks.md, "On a GPU machine").
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
RES=${RESULTS:-benchmarks/results}
mkdir -p "$RES"
LOG=$RES/gpu_session-log.txt
: >"$LOG"

if [ "${SMOKE:-0}" = 1 ]; then
    DEV=cpu; MODE=(--smoke); ABL=(--shapes 4x16x40 --d 8 --d-mu 3); CMP=()
    T_ABL=120; T_R50=120; T_CMP=120; T_EVAL=120; T_PROF=120; T_MEM=120; MEM=(--n 500 --seeds 2)
else
    DEV=cuda; MODE=(--full); ABL=(); CMP=(--layers 'layer3.*' --steps 20)
    # seconds per part; the sum (with start-up) stays under 10 minutes.
    # ResNet-50 first and longest: it is the headline (target: <= 10 min on one H100)
    T_ABL=45; T_R50=360; T_CMP=50; T_EVAL=30; T_PROF=45; T_MEM=30
    MEM=(--n 10000 --seeds 10 --ratio 0.1)  # table 5's largest cell, one step
fi

part() {  # part NAME SECONDS CMD...: run one part, keep going whatever it returns
    local name=$1 secs=$2; shift 2
    local t0=$SECONDS
    echo "== $name (limit ${secs}s): $*" | tee -a "$LOG"
    timeout --signal=INT --kill-after=10 "$secs" "$@" >>"$LOG" 2>&1
    echo "== $name: rc=$? after $((SECONDS - t0))s" | tee -a "$LOG"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} >>"$LOG" 2>&1

# 1. the headline: all of ResNet-50, ten seeds, 2000 steps, wall time and peak GPU memory
#    (progress bars in the log: a run cut short still shows how far each fit unit got)
part convert_resnet50 $T_R50 "$PY" benchmarks/convert.py "${MODE[@]}" --device $DEV --out "$RES" \
    --parts convert --convert-archs resnet50 --convert-init spectral --progress --tag resnet50
# 2. the fused inner loop vs autograd vs per-chunk rebuild, the engine's own ablation
part engine_ablation $T_ABL "$PY" benchmarks/engine_ablation.py --device $DEV --out "$RES" "${ABL[@]}"
# 3. engine vs per-layer, per-seed loops (same loss, optimizer, steps), resnet18 layer3 x 10 seeds
part compare $T_CMP "$PY" benchmarks/convert.py "${MODE[@]}" --device $DEV --out "$RES" \
    --parts compare "${CMP[@]}" --tag compare-layer3
# 4. evaluation throughput: project path vs a plain timm-style loop
part eval $T_EVAL "$PY" benchmarks/eval_throughput.py "${MODE[@]}" --device $DEV --out "$RES"
# 5. where the time goes: torch.profiler over one resnet18 compress, and the probe variants
part profile $T_PROF "$PY" benchmarks/convert.py "${MODE[@]}" --device $DEV --out "$RES" \
    --parts profile,probe --tag profile

# 6. peak GPU memory of a 10000 x 10000 x 10 seeds fit against the memory model
part memory $T_MEM "$PY" benchmarks/memory.py --device $DEV --out "$RES" "${MEM[@]}" --tag n10000

if [ -n "${OUT:-}" ]; then
    # one archive (few files are easier to copy back from a remote machine) plus the log
    (cd "$RES" && tar czf "$OUT"/gpu_session-results.tgz ./*-"$DEV"*.json ./profile-"$DEV"*.txt \
        gpu_session-log.txt 2>/dev/null) || true
    cp "$LOG" "$OUT"/ 2>/dev/null || true
fi
echo "done; log: $LOG"
