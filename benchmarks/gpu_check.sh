#!/usr/bin/env bash
# Prove minisnn's GPU path on a real CUDA machine, in one run of about five minutes:
#
#     pip install -e ".[gpu,test]"        # and, for the PyTorch peer, a CUDA build of torch
#     bash benchmarks/gpu_check.sh
#
# 1. minisnn doctor: versions, the GPU, a kernel and a matrix product run on it;
# 2. the GPU tests (tests/test_gpu.py) on real CuPy -- every CUDA kernel against its reference, whole
#    training steps against the CPU's;
# 3. 30 steps of ResNet-19 (T = 2, batch 64) on the CIFAR-10 sample: the loss must fall;
# 4. the ResNet-19 step beside the same network in PyTorch on the same GPU (where CUDA torch is installed).
# Everything printed is appended to benchmarks/RESULTS.md (RESULTS=... to change), with the date and the
# outcome of each part. Exit status: 0 when every part passed.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-benchmarks/RESULTS.md}
DATA=${DATA:-../shared/data/cifar10-sample}
report=$(mktemp)
failed=0

part() {  # part NAME SECONDS COMMAND...: run with a time limit, keep its output, note pass/fail
    local name=$1 limit=$2
    shift 2
    echo "### $name" >> "$report"
    echo '```' >> "$report"
    if timeout "$limit" "$@" 2>&1 | tee -a "$report"; then
        echo '```' >> "$report"; echo "$name: passed" | tee -a "$report"
    else
        echo '```' >> "$report"; echo "$name: FAILED" | tee -a "$report"; failed=1
    fi
    echo >> "$report"
}

part "doctor" 60 minisnn doctor
part "GPU tests on real CuPy" 120 python -m pytest -q tests/test_gpu.py
part "30 steps of ResNet-19 on the CIFAR-10 sample" 120 \
    python benchmarks/gpu_steps.py --device cuda --data-dir "$DATA"
part "ResNet-19 step against PyTorch on the same GPU" 120 \
    python benchmarks/bench.py --device cuda --model resnet19 -T 2 --batch 64 --steps 5 --warmup 2

{
    echo
    echo "## GPU check: bash benchmarks/gpu_check.sh ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    cat "$report"
} >> "$RESULTS"
rm -f "$report"
echo "appended to $RESULTS"
exit $failed
