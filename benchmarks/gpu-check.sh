#!/usr/bin/env bash
# The GPU check, in one go on a machine with an NVIDIA GPU and no network (about 8 minutes):
#   benchmarks/gpu-check.sh OMNIGLOT_DIR [WHEELS_DIR] [RESULTS_FILE]
# 1. the GPU-marked tests (every strategy's meta-gradient on the GPU against the CPU loop, a run
#    trained and evaluated on cuda);
# 2. `metagrad bench` on the GPU for omniglot-5w1s, omniglot-20w1s and miniimagenet-5w1s:
#    metagrad's strategies against the peers installed from WHEELS_DIR (learn2learn, higher,
#    torchopt, parallel-metalearn wheels; `pip download` them where there is a network);
# 3. with 2 GPUs or more, 20 steps of a 2-process NCCL run against 1 process;
# 4. a 5-minute Omniglot 5-way 1-shot training with its test accuracy on 600 tasks.
# Everything is written to RESULTS_FILE (default gpu-check.md) as it goes.
set -uo pipefail
data=${1:?give the Omniglot folder, with images_background.zip and images_evaluation.zip}
wheels=${2:-}
results=${3:-gpu-check.md}
work=$(mktemp -d)
say() { printf '%s\n' "$@" | tee -a "$results"; }
run() { # a titled step, its output kept in full
    say "" "## $1" "" '```'
    shift
    "$@" 2>&1 | tee -a "$results"
    say '```'
}

: >"$results"
say "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
run "device" nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
if [ -n "$wheels" ]; then
    run "peers from $wheels" pip install --no-index --find-links "$wheels" --no-deps \
        learn2learn higher torchopt parallel-metalearn
fi
run "GPU tests" timeout 60 python -m pytest -q -m gpu tests/gpu
run "bench" timeout 150 metagrad bench omniglot-5w1s omniglot-20w1s miniimagenet-5w1s \
    --device cuda --repeats 5 --out "$work/bench.jsonl"
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
    common=(maml-omniglot-5w1s --data-root "$data" --no-progress
        --set train.device=cuda train.iterations=20 train.val_every=20 eval.num_tasks=100)
    run "1 process" timeout 120 metagrad train "${common[@]}" --run-dir "$work/one"
    run "2 processes (NCCL)" timeout 120 torchrun --standalone --nproc-per-node 2 \
        -m metagrad train "${common[@]}" --run-dir "$work/two"
    run "1 vs 2 processes: largest parameter difference" python - "$work" <<'EOF'
import sys
from pathlib import Path

from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore

one, two = (CheckpointStore(Path(sys.argv[1]) / r / CHECKPOINT_DIR).load("last")["model"]
            for r in ("one", "two"))
print(max((one[k].float() - two[k].float()).abs().max().item() for k in one))
EOF
else
    say "" "## 2 processes (NCCL)" "" "not run: this machine has one GPU"
fi
run "5-minute training, Omniglot 5-way 1-shot" timeout 380 metagrad train maml-omniglot-5w1s \
    --data-root "$data" --time-budget 5m --run-dir "$work/omniglot" --no-progress \
    --set train.device=cuda
rm -rf "$work"
