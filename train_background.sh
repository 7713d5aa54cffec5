#!/usr/bin/env bash
# Start a training run in the background, with a log file and a pid file; or look after running ones.
#
#   ./train_background.sh [--foreground] [--nproc N] <mamba-train flags...>   start a run
#   ./train_background.sh --status [RUN]        list runs (or one): running or not, last log line
#   ./train_background.sh --tail [RUN]          follow a run's log (default: the newest)
#   ./train_background.sh --stop [RUN]          stop a run: it saves a checkpoint first (default: the newest)
#
# Every other flag goes to `python -m mamba_trainer.train` unchanged: no hyperparameters live here.
# Environment: PYTHON (default python3), LOG_DIR (default ./logs).
set -euo pipefail

PYTHON="${PYTHON:-python3}"
LOG_DIR="${LOG_DIR:-logs}"

die() { echo "error: $*" >&2; exit 2; }

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

newest_run() { { ls -t "$LOG_DIR"/*.pid 2>/dev/null || true; } | head -n 1 | xargs -r basename | sed 's/\.pid$//'; }

pick_run() {  # $1 = run name or empty (newest)
    local run="${1:-$(newest_run)}"
    [ -n "$run" ] || die "no runs in $LOG_DIR; start one with ./train_background.sh <flags>"
    [ -f "$LOG_DIR/$run.log" ] || die "no run '$run' in $LOG_DIR (see ./train_background.sh --status)"
    echo "$run"
}

status() {
    local runs pid state folder
    if [ -n "${1:-}" ]; then runs="$(pick_run "$1")"; else runs="$({ ls -t "$LOG_DIR"/*.pid 2>/dev/null || true; } | xargs -r -n1 basename | sed 's/\.pid$//')"; fi
    [ -n "$runs" ] || { echo "no runs in $LOG_DIR"; return 0; }
    for run in $runs; do
        pid="$(cat "$LOG_DIR/$run.pid" 2>/dev/null || true)"
        if pid_alive "$pid"; then state="running (pid $pid)"; else state="not running"; fi
        echo "$run: $state"
        echo "    log: $LOG_DIR/$run.log"
        echo "    last: $(grep -v '^\s*$' "$LOG_DIR/$run.log" 2>/dev/null | tail -n 1 | cut -c1-160)"
        # the run folder is printed by mamba-train ("run folder: DIR ..."); its plot is written at the end
        folder="$(sed -n 's/^run folder: \([^ ]*\).*/\1/p' "$LOG_DIR/$run.log" 2>/dev/null | tail -n 1)"
        if [ -n "$folder" ] && [ -f "$folder/plots/training.png" ]; then echo "    plot: $folder/plots/training.png"
        elif [ -n "$folder" ]; then echo "    plot: $folder/plots/training.png (written when the run ends)"; fi
    done
}

stop() {
    local run pid
    run="$(pick_run "${1:-}")"
    pid="$(cat "$LOG_DIR/$run.pid" 2>/dev/null || true)"
    pid_alive "$pid" || { echo "$run is not running"; return 0; }
    # The run is a session leader (setsid): signal its whole group. SIGTERM makes it save a checkpoint first.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 600); do pid_alive "$pid" || break; sleep 1; done
    if pid_alive "$pid"; then echo "$run did not stop within 10 minutes; kill -KILL -- -$pid to force it" >&2; exit 1; fi
    echo "$run stopped (continue it with --resume latest --output_dir <its run folder>; see $LOG_DIR/$run.log)"
}

case "${1:-}" in
    --status) status "${2:-}"; exit 0 ;;
    --stop) stop "${2:-}"; exit 0 ;;
    --tail) run="$(pick_run "${2:-}")"; exec tail -n 50 -f "$LOG_DIR/$run.log" ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
esac

FOREGROUND=0
NPROC=1
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --foreground) FOREGROUND=1 ;;
        --nproc) [ $# -ge 2 ] || die "--nproc needs a number"; NPROC="$2"; shift ;;
        --nproc=*) NPROC="${1#--nproc=}" ;;
        *) ARGS+=("$1") ;;
    esac
    shift
done
[[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || die "--nproc must be a positive integer, got '$NPROC'"

# Environment check: the package must import, or nothing below can work.
"$PYTHON" -c "import mamba_trainer, torch, transformers" 2>/dev/null || \
    die "mamba_trainer is not importable with $PYTHON; install it (from the repo root): python3 -m pip install -c constraints.txt torch==2.13.0 -e ."

# Validate the flags and learn the run folder now, so a typo fails here and not in a background log.
resolved="$("$PYTHON" -m mamba_trainer.train --resolve_only "${ARGS[@]}")" || exit $?
RUN_DIR="${resolved#run_dir=}"
RUN="$(basename "$RUN_DIR")"
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/$RUN.log"
PID_FILE="$LOG_DIR/$RUN.pid"
if pid_alive "$(cat "$PID_FILE" 2>/dev/null || true)"; then
    die "$RUN is already running (pid $(cat "$PID_FILE")); see ./train_background.sh --status $RUN or --stop $RUN"
fi

# Pin the folder the Python side chose (a default name has a timestamp in it).
case " ${ARGS[*]-} " in *" --output_dir "*|*" --output_dir="*) ;; *) ARGS+=(--output_dir "$RUN_DIR") ;; esac
if [ "$NPROC" -gt 1 ]; then
    CMD=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m mamba_trainer.train "${ARGS[@]}")
else
    CMD=("$PYTHON" -m mamba_trainer.train "${ARGS[@]}")
fi

if [ "$FOREGROUND" -eq 1 ]; then
    echo "$$" > "$PID_FILE"
    set +e
    "${CMD[@]}" 2>&1 | tee -a "$LOG"
    status_code=${PIPESTATUS[0]}
    rm -f "$PID_FILE"
    exit "$status_code"
fi

echo "=== $(date '+%Y-%m-%d %H:%M:%S') ${CMD[*]}" >> "$LOG"
PYTHONUNBUFFERED=1 setsid nohup "${CMD[@]}" >> "$LOG" 2>&1 < /dev/null &
echo "$!" > "$PID_FILE"
echo "started $RUN (pid $!)"
echo "  run folder: $RUN_DIR"
echo "  log:        $LOG"
echo "  follow:     ./train_background.sh --tail $RUN"
echo "  status:     ./train_background.sh --status $RUN"
echo "  stop:       ./train_background.sh --stop $RUN"
