#!/usr/bin/env bash
# The GPU check, one command, under five minutes, one table at the end:
#
#   benchmarks/gpu_check.sh            # from the repository root; PYTHON=... to choose python
#
# 1. the CUDA tests (pytest -m cuda: a training step, evaluate, a CUDA checkpoint read on
#    the CPU, a resumed CUDA run bit for bit);
# 2. ppl-vae bench --device cuda --batch-sizes 128,1024 --json (the step against
#    hand-written PyTorch);
# 3. a whole ppl-vae train on CUDA (mnist-5k, 3 epochs, figures and report included);
# 4. a two-process torchrun with NCCL, when two GPUs are visible.
#
# On a machine without a GPU it runs what it can -- the CUDA tests (which skip), and the
# bench and the whole run on the CPU as stand-ins, smaller -- and the table says what was
# skipped and why. Every step has its own time limit; logs go to $LOGS (a temporary folder).
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
LOGS=${LOGS:-$(mktemp -d)}
PPL=("$PYTHON" -m ppl_vae)
ROWS=()

gpus=$("$PYTHON" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null || echo 0)
name=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0))" 2>/dev/null || echo "none")

# step NAME LIMIT_S SUMMARY_COMMAND -- COMMAND...: run COMMAND with a time limit, then
# SUMMARY_COMMAND (reading $log) prints the table's last column.
step() {
    local label=$1 limit=$2 summary=$3
    shift 4
    log="$LOGS/${label// /_}.log"
    local t0 t1 rc status
    t0=$(date +%s.%N)
    timeout "$limit" "$@" >"$log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    case $rc in
        0) status=ok ;;
        124) status="TIMEOUT (${limit}s)" ;;
        *) status="FAILED (rc $rc)" ;;
    esac
    ROWS+=("$(printf '%-28s | %-16s | %7.1f | %s' "$label" "$status" "$(echo "$t1 - $t0" | bc)" "$(eval "$summary" 2>/dev/null | tr '\n' ' ' | cut -c1-110)")")
}

skip() {
    ROWS+=("$(printf '%-28s | %-16s | %7s | %s' "$1" "skipped" "-" "$2")")
}

summary_pytest='tail -n 1 "$log"; [ "$gpus" -ge 1 ] || echo "(no GPU: they skip)"'
summary_bench() {
    "$PYTHON" - "$log" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
records = json.loads(text[text.index("["):])
print("; ".join(
    f"b{r['batch_size']}: {r['suite_ms']:.2f} vs {r['hand_ms']:.2f} ms/step = {r['ratio']:.2f}x"
    for r in records
))
PY
}
summary_bench=summary_bench
summary_train='grep -E "test ELBO" "$log" | head -n 1'

if [ "$gpus" -ge 1 ]; then
    device=cuda
else
    device=cpu
fi

step "cuda tests (pytest -m cuda)" 150 "$summary_pytest" -- \
    "$PYTHON" -m pytest -q -m cuda -p no:cacheprovider tests/runs/test_cuda.py
if [ "$gpus" -ge 1 ]; then
    step "bench cuda 128,1024" 90 "$summary_bench" -- \
        "${PPL[@]}" bench --device cuda --batch-sizes 128,1024 --json
    step "train vae mnist-5k cuda 3 ep" 120 "$summary_train" -- \
        "${PPL[@]}" train vae --data mnist-5k --epochs 3 --batch-size 128 --device cuda \
        --no-progress --out "$LOGS/run-cuda"
else
    skip "bench cuda 128,1024" "no CUDA GPU visible; CPU stand-in below"
    step "bench cpu 128 (stand-in)" 90 "$summary_bench" -- \
        "${PPL[@]}" bench --device cpu --batch-sizes 128 --steps 10 --repeats 3 --json
    skip "train vae mnist-5k cuda" "no CUDA GPU visible; CPU stand-in below"
    step "train vae mnist-5k cpu 1 ep" 150 "$summary_train" -- \
        "${PPL[@]}" train vae --data mnist-5k --epochs 1 --batch-size 128 --device cpu \
        --no-progress --out "$LOGS/run-cpu"
fi
if [ "$gpus" -ge 2 ]; then
    step "torchrun 2 x NCCL" 120 "$summary_train" -- \
        "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=2 -m ppl_vae train vae \
        --data mnist-5k --epochs 2 --batch-size 256 --device cuda --no-progress \
        --out "$LOGS/run-nccl"
else
    skip "torchrun 2 x NCCL" "needs two GPUs; $gpus visible"
fi

echo
echo "GPU check: $gpus GPU(s) ($name); torch $("$PYTHON" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null); logs in $LOGS"
printf '%-28s | %-16s | %7s | %s\n' "step" "status" "seconds" "result"
printf -- '-----------------------------+------------------+---------+-------------------------\n'
failed=0
for row in "${ROWS[@]}"; do
    echo "$row"
    case $row in *FAILED* | *TIMEOUT*) failed=1 ;; esac
done
exit $failed
