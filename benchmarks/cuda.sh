#!/usr/bin/env bash
# The CUDA check: one command on a machine with an NVIDIA GPU, run from the repository root.
#
#     bash benchmarks/cuda.sh [OUT_DIR]          # default: outputs/benchmarks/cuda
#
# 1. the book's run end to end on the GPU (trainer.accelerator=gpu): metrics.json, grad_norms.csv;
# 2. the parity benchmark on the GPU, every clip mode: the Lightning run against the plain loop on
#    the same device (numbers equal, fit-time ratio, peak CUDA memory);
# 3. a few points of the scaling table on the GPU.
# Each step runs even if one before it failed; the exit status is the number of failed steps.
# A dry run elsewhere: ACCELERATOR=cpu OVERRIDES="trainer.max_epochs=2" bash benchmarks/cuda.sh /tmp/x
set -uo pipefail
out=${1:-outputs/benchmarks/cuda}
mkdir -p "$out"
py=${PYTHON:-python3}
acc=${ACCELERATOR:-gpu}
read -r -a extra <<<"${OVERRIDES:-}"
export PYTHONUNBUFFERED=1
failed=0
step() {  # step NAME COMMAND...: runs it, its output to the terminal and to $out/NAME.log
    echo "== $1"
    local name=$1
    shift
    "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "== $name failed with exit status $rc"; failed=$((failed + 1)); }
}

step env "$py" -c "
import platform, torch, lightning
print('python', platform.python_version(), 'torch', torch.__version__, 'lightning', lightning.__version__)
print('cuda', torch.version.cuda, 'device',
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"

run_dir="$out/run"
step run "$py" -m srn_lightning.train trainer.accelerator="$acc" trainer.enable_progress_bar=false \
    hydra.run.dir="$run_dir" data.dir="$out/data" "${extra[@]}"
cp "$run_dir/metrics.json" "$out/run_metrics.json" 2>/dev/null
cp "$run_dir/grad_norms.csv" "$out/run_grad_norms.csv" 2>/dev/null
rm -rf "$run_dir" "$out/data"

step parity "$py" -m benchmarks.parity trainer.accelerator="$acc" "${extra[@]}" --pairs 5 \
    --out "$out/parity.json"
step scaling "$py" -m benchmarks.scaling trainer.accelerator="$acc" "${extra[@]}" --pairs 3 \
    --lengths 5 20 35 --hidden 32 256 --out "$out/scaling.json"
exit "$failed"
