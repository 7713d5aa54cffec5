#!/usr/bin/env bash
# Every GPU-only check of this project, in one command, in <= 8 minutes on one GPU, with one summary table.
#
#   bash bench/gpu_check.sh                 # results in ${GPU_CHECK_DIR:-results/gpu_check}
#   CUDA_KERNELS=0 bash bench/gpu_check.sh  # skip trying to install mamba-ssm / causal-conv1d
#
# 1. Muon step vs torch.optim.Muon in bf16 on hybrid-small's matrices (bench/optimizer_step.py)
# 2. Muon / AdamW training throughput, hybrid-small-standard, bf16 (bench/throughput.py), with the fused
#    mamba-ssm / causal-conv1d kernels when they install, else transformers' PyTorch path (said in the table)
# 3. --vram_auto on this card: the batch size it picks for hybrid-small-standard, and that 5 steps then run
# 4. a 50-step training run that saves at step 25, is resumed from checkpoint-25 to 50, and is evaluated
# On a machine without CUDA it says so in one line and exits 2. Each check has its own time limit; a failed
# check is a FAIL row (its log is named) and the script goes on to the next.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${GPU_CHECK_DIR:-results/gpu_check}
mkdir -p "$OUT"

# GPU_CHECK_REHEARSE=1 runs only check 4 on whatever device there is (a dry run of the script's plumbing);
# GPU_CHECK_LIMIT_SCALE=N multiplies every time limit (for such a dry run on a CPU)
REHEARSE=${GPU_CHECK_REHEARSE:-0}
if [ "$REHEARSE" != "1" ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device (torch.cuda.is_available() is False): run this on a machine with one GPU" >&2
    exit 2
fi

declare -a ROWS
row() { ROWS+=("| $1 | $2 | $3 |"); }
run_check() {  # name, time limit (s), log file, command...
    local name=$1 limit=$(( $2 * ${GPU_CHECK_LIMIT_SCALE:-1} )) log=$3; shift 3
    local t0=$SECONDS
    if timeout "$limit" "$@" >"$log" 2>&1; then
        echo "[$name] ok in $((SECONDS - t0)) s"
        return 0
    fi
    echo "[$name] FAILED after $((SECONDS - t0)) s (log: $log)"
    return 1
}

"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none (rehearsal)', '| torch', torch.__version__, '| CUDA', torch.version.cuda)" | tee "$OUT/device.txt"
if [ "$REHEARSE" != "1" ]; then

KERNELS="transformers' PyTorch path"
if [ "${CUDA_KERNELS:-1}" = "1" ]; then
    if timeout 150 "$PY" -m pip install -q --no-build-isolation "mamba-ssm>=2.2" "causal-conv1d>=1.4" >"$OUT/kernels_install.log" 2>&1 \
        && "$PY" -c "import mamba_ssm, causal_conv1d" 2>>"$OUT/kernels_install.log"; then
        KERNELS="mamba-ssm + causal-conv1d kernels"
    fi
fi
echo "Mamba path: $KERNELS"

# 1. the optimizer step
if run_check step 90 "$OUT/step.log" "$PY" bench/optimizer_step.py --model_size hybrid-small --device cuda --repeats 10; then
    default=$(grep '^| ours default ' "$OUT/step.log" | awk -F'|' '{gsub(/ /,"",$4); gsub(/ /,"",$5); print $4" ms, "$5"x torch"}')
    torchms=$(grep '^| torch.optim.Muon' "$OUT/step.log" | awk -F'|' '{gsub(/ /,"",$4); print $4" ms"}')
    row "Muon step, hybrid-small (ours default vs torch.optim.Muon bf16)" PASS "ours $default; torch $torchms"
else
    row "Muon step, hybrid-small" FAIL "$OUT/step.log"
fi

# 2. training throughput
if run_check throughput 200 "$OUT/throughput.log" "$PY" bench/throughput.py --model_size hybrid-small-standard \
        --tokenizer bundled --steps 15 --skip 5 --rounds 2 --seq_len 1024 --extra "--bf16 true"; then
    ratio=$(grep -o 'median of per-round ratios [0-9.]*' "$OUT/throughput.log" | awk '{print $NF}')
    row "Muon/AdamW throughput, hybrid-small-standard bf16 ($KERNELS)" PASS "ratio $ratio (target >= 0.97)"
else
    row "Muon/AdamW throughput, hybrid-small-standard bf16" FAIL "$OUT/throughput.log"
fi

# 3. --vram_auto on the real card
rm -rf "$OUT/vram_run"
if run_check vram_auto 90 "$OUT/vram_auto.log" "$PY" -m mamba_trainer.train --model_size hybrid-small-standard \
        --tokenizer bundled --training_preset muon_smoke --vram_auto --max_steps 5 --max_seq_length 1024 \
        --bf16 true --save_strategy no --eval_strategy no --output_dir "$OUT/vram_run"; then
    picked=$(grep -i 'vram' "$OUT/vram_auto.log" | tail -1 | cut -c1-120)
    row "--vram_auto, hybrid-small-standard, 5 steps" PASS "${picked:-see log}"
else
    row "--vram_auto, hybrid-small-standard" FAIL "$OUT/vram_auto.log"
fi

fi  # end of the GPU-only checks 1-3

# 4. train 50 steps with a save at 25, resume from checkpoint-25, evaluate
rm -rf "$OUT/resume_run" "$OUT/resume_ref"
train=("$PY" -m mamba_trainer.train --model_size hybrid-tiny --training_preset muon_demo --max_steps 50
       --save_steps 25 --eval_strategy no --seed 1)
[ "$REHEARSE" = "1" ] || train+=(--bf16 true)
if run_check train_50 120 "$OUT/train_50.log" "${train[@]}" --output_dir "$OUT/resume_ref" \
   && cp -r "$OUT/resume_ref" "$OUT/resume_run" && rm -rf "$OUT/resume_run/checkpoint-50" "$OUT/resume_run/final" \
   && run_check resume 120 "$OUT/resume.log" "${train[@]}" --output_dir "$OUT/resume_run" --resume latest \
   && run_check evaluate 90 "$OUT/evaluate.log" "$PY" -m mamba_trainer.evaluate --model "$OUT/resume_run/final" \
        --dataset bundled-math --limit 50; then
    same=$("$PY" - "$OUT/resume_ref/final" "$OUT/resume_run/final" <<'EOF'
import sys, torch
from transformers import AutoModelForCausalLM
a, b = (AutoModelForCausalLM.from_pretrained(p) for p in sys.argv[1:3])
diff = max((x - y).abs().max().item() for x, y in zip(a.state_dict().values(), b.state_dict().values()))
print(f"max |resumed - uninterrupted| = {diff:.2e}")
EOF
)
    acc=$(grep -iE 'accuracy' "$OUT/evaluate.log" | tail -1 | cut -c1-80)
    row "50 steps, save at 25, resume, evaluate (hybrid-tiny, bf16)" PASS "$same; ${acc:-see evaluate.log}"
else
    row "50 steps, save, resume, evaluate" FAIL "see $OUT/train_50.log, resume.log, evaluate.log"
fi

{
    echo
    cat "$OUT/device.txt"
    echo "| check | result | numbers |"
    echo "|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/summary.md"
grep -q '| FAIL |' "$OUT/summary.md" && exit 1
exit 0
