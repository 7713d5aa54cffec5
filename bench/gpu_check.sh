#!/usr/bin/env bash
# Every GPU-only check of this project, in one command, in <= 8 minutes on one GPU, with one summary table.
#
#   bash bench/gpu_check.sh                 # results in ${GPU_CHECK_DIR:-results/gpu_check}
#   CUDA_KERNELS=0 bash bench/gpu_check.sh  # skip the mamba-ssm / causal-conv1d wheels even where they are carried
#   GPU_CHECK_INSTALL_ONLY=1 ...            # stop after step 0 (the offline install and an import of the package)
#
# 0. The machine reaches no package registry: what it lacks (datasets, trl, mambapy, ...) comes as wheels that
#    `python3 scripts/gpu_wheels.py` downloads here into .gpu_wheels/ (git-ignored; carry it to the machine).
#    They install with --no-index, every preinstalled package held at its version (torch, transformers,
#    accelerate stay the machine's own); the project installs editable with --no-deps. The fused mamba-ssm /
#    causal-conv1d kernels are installed only where their wheels are in .gpu_wheels/ (PyPI has only sources).
# 1. Muon step vs torch.optim.Muon in bf16 on hybrid-small's matrices (bench/optimizer_step.py)
# 2. Muon / AdamW training throughput, hybrid-small-standard, bf16 (bench/throughput.py), with the fused
#    mamba-ssm / causal-conv1d kernels when they install, else transformers' PyTorch path (said in the table)
# 3. --vram_auto on this card: the batch size it picks for hybrid-small-standard, and that 5 steps then run
# 4. a 50-step training run that saves at step 25, is resumed from checkpoint-25 to 50, and is evaluated
# 5. muon_default's lr at hybrid-small-standard against 1/3x and 3x, 100 steps each (bench/lr_check.py)
# 6. packing: content tokens/s of stream vs bfd at hybrid-small-standard bf16 (bench/throughput.py), and the packed
#    rows through the CUDA kernels == the PyTorch path (tests/test_packed.py -k cuda) where the kernels install
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

# 0. offline install from the carried wheels (see the top); its log is $OUT/install.log
WHEELS=${GPU_WHEELS:-.gpu_wheels}
PIP=("$PY" -m pip install --no-index --no-cache-dir --disable-pip-version-check)
KERNELS="transformers' PyTorch path"
t0=$SECONDS
{
    shopt -s nullglob
    kernel_wheels=("$WHEELS"/mamba_ssm-*.whl "$WHEELS"/causal_conv1d-*.whl)
    dep_wheels=()
    for w in "$WHEELS"/*.whl; do case "${w##*/}" in mamba_ssm-*|causal_conv1d-*) ;; *) dep_wheels+=("$w") ;; esac; done
    shopt -u nullglob
    if [ ${#dep_wheels[@]} -gt 0 ]; then
        "$PY" -m pip list --format=freeze --exclude-editable --disable-pip-version-check >"$OUT/preinstalled.txt"
        # resolved against what is installed, nothing installed may change: a conflict fails here, loudly ...
        if ! "${PIP[@]}" --find-links "$WHEELS" -c "$OUT/preinstalled.txt" "${dep_wheels[@]}"; then
            # ... and then the wheels go in as they are, the conflict noted (pip check below names it)
            echo "gpu_check: the carried wheels do not resolve against this machine's packages; installing them with --no-deps"
            "${PIP[@]}" --no-deps "${dep_wheels[@]}"
        fi
    else
        echo "gpu_check: no wheels in $WHEELS/ (python3 scripts/gpu_wheels.py makes them; carry the folder)"
    fi
    if [ "${CUDA_KERNELS:-1}" = "1" ] && [ ${#kernel_wheels[@]} -eq 2 ]; then
        if "${PIP[@]}" --no-deps "${kernel_wheels[@]}" && "$PY" -c "import mamba_ssm, causal_conv1d"; then
            KERNELS="mamba-ssm + causal-conv1d kernels"
        else  # a kernel that will not import would break the Mamba layers that probe for it
            echo "gpu_check: the carried kernel wheels do not import here; uninstalling them"
            "$PY" -m pip uninstall -y mamba-ssm causal-conv1d
        fi
    fi
    # the package itself, its dependencies left as they are
    if ! "${PIP[@]}" --no-deps --no-build-isolation -e .; then
        echo "gpu_check: the editable install failed; the repo goes on PYTHONPATH instead"
    fi
    "$PY" -m pip check --disable-pip-version-check
} >"$OUT/install.log" 2>&1
(cd / && "$PY" -c "import mamba_trainer" 2>/dev/null) || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if "$PY" -c "import mamba_trainer.train, datasets" >>"$OUT/install.log" 2>&1; then
    echo "[install] ok in $((SECONDS - t0)) s: mamba_trainer.train imports (log: $OUT/install.log)"
else
    echo "[install] FAILED after $((SECONDS - t0)) s: mamba_trainer.train does not import (log: $OUT/install.log)"
    tail -15 "$OUT/install.log"
    exit 1
fi
# pip check's unmet requirements (bitsandbytes is carried only with scripts/gpu_wheels.py --with-bitsandbytes)
grep -E 'which is not installed|has requirement|which is incompatible' "$OUT/install.log" | head -5 | sed 's/^/[install] note: /'
echo "Mamba path: $KERNELS"
[ "${GPU_CHECK_INSTALL_ONLY:-0}" = "1" ] && exit 0

if [ "$REHEARSE" != "1" ]; then

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

# 5. the preset's lr at 112M (hybrid-small-standard; bundled tokenizer: no Hub here): muon_default's resolved lr
#    (configs/lr_rule.py) against 1/3x and 3x, 100 steps of 8 x 1,024 tokens each, the same data, run side by side
if run_check lr_112m 240 "$OUT/lr_check.log" "$PY" bench/lr_check.py --model_size hybrid-small-standard \
        --training_preset muon_default --steps 100 --batch 8 --seq_len 1024 --eval_examples 64 \
        --extra "--bf16 true --tokenizer bundled" --out "$OUT/lr_check"; then
    best=$(grep '^best:' "$OUT/lr_check.log" | cut -c7-90)
    losses=$(grep -E '^\| [0-9.]+x \|' "$OUT/lr_check.log" | awk -F'|' '{gsub(/ /,"",$2); gsub(/ /,"",$4); printf "%s %s; ", $2, $4}')
    row "muon_default's lr at hybrid-small-standard, 100 steps (1/3x, 1x, 3x)" PASS "${losses}best: ${best}"
else
    row "muon_default's lr at hybrid-small-standard" FAIL "$OUT/lr_check.log"
fi

# 6. packing on the GPU: content tokens/s of stream vs bfd (examples kept apart) at hybrid-small-standard in bf16,
#    and, where the kernels are installed, bfd through mamba-ssm / causal-conv1d == bfd on the PyTorch path
#    (bench/throughput.py --compare packing: the two alternate, side by side; tokens/s counts non-padding tokens)
if run_check packing_speed 240 "$OUT/packing.log" "$PY" bench/throughput.py --compare packing \
        --model_size hybrid-small-standard --tokenizer bundled --batch 8 --seq_len 1024 --steps 20 --skip 5 \
        --rounds 2 --extra "--bf16 true"; then
    speeds=$(grep -E '^\| (stream|bfd) \|' "$OUT/packing.log" | awk -F'|' '{gsub(/ /,"",$2); gsub(/ /,"",$3); printf "%s %s tok/s; ", $2, $3}')
    ratio=$(grep -o 'median of per-round ratios [0-9.]*' "$OUT/packing.log" | awk '{print $NF}')
    row "packing: content tokens/s, hybrid-small-standard bf16 ($KERNELS)" PASS "${speeds}bfd/stream $ratio (target >= 0.95)"
else
    row "packing: content tokens/s, hybrid-small-standard bf16" FAIL "$OUT/packing.log"
fi
if [ "$KERNELS" = "mamba-ssm + causal-conv1d kernels" ]; then
    if run_check packed_kernels 120 "$OUT/packed_kernels.log" "$PY" -m pytest -q -p no:cacheprovider \
            tests/test_packed.py -k cuda; then
        row "packed rows: CUDA kernels with seq_idx == PyTorch path" PASS "$(tail -1 "$OUT/packed_kernels.log")"
    else
        row "packed rows: CUDA kernels with seq_idx == PyTorch path" FAIL "$OUT/packed_kernels.log"
    fi
else
    row "packed rows: CUDA kernels with seq_idx" SKIP "no kernel wheels carried ($KERNELS)"
fi

fi  # end of the GPU-only checks 1-3, 5, 6

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
