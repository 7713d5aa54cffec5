"""train_background.sh in a temporary folder: start, status, refuse a double launch, stop (with a checkpoint)."""

import os
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # every test runs the launcher script (some start a training)

SCRIPT = str(Path(__file__).resolve().parent.parent / "train_background.sh")
RUN_ARGS = ["--model_size", "hybrid-tiny", "--training_preset", "muon_smoke", "--max_steps", "400",
            "--save_steps", "1000", "--eval_steps", "1000", "--logging_steps", "1", "--max_train_examples", "400",
            "--output_dir", "checkpoints/bg"]


def launch(cwd, *args, timeout=180):
    env = {**os.environ, "LOG_DIR": str(Path(cwd) / "logs")}
    return subprocess.run([SCRIPT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(1)
    return False


def test_start_status_refuse_double_launch_stop(tmp_path):
    started = launch(tmp_path, *RUN_ARGS)
    assert started.returncode == 0, started.stderr
    assert "started bg" in started.stdout and "--tail bg" in started.stdout
    log = tmp_path / "logs" / "bg.log"
    try:
        status = launch(tmp_path, "--status", "bg")
        assert "bg: running" in status.stdout

        again = launch(tmp_path, *RUN_ARGS)
        assert again.returncode != 0 and "already running" in again.stderr

        # The background log shows step/total, tokens/s and ETA lines (no progress bar in a file).
        assert wait_for(lambda: log.exists() and "tok/s | ETA" in log.read_text()), log.read_text()
        line = next(l for l in log.read_text().splitlines() if "tok/s" in l)
        assert "/400" in line
    finally:
        stopped = launch(tmp_path, "--stop", "bg", timeout=300)
    assert stopped.returncode == 0 and "bg stopped" in stopped.stdout
    assert "not running" in launch(tmp_path, "--status", "bg").stdout
    text = log.read_text()
    assert "SIGTERM received" in text and "--resume latest" in text
    # Stopping saved a whole checkpoint to continue from, and no final/ (the run did not finish).
    checkpoints = list((tmp_path / "checkpoints" / "bg").glob("checkpoint-*"))
    assert checkpoints and (checkpoints[0] / "trainer_state.json").is_file()
    assert not (tmp_path / "checkpoints" / "bg" / "final").exists()


def test_bad_flag_fails_before_backgrounding(tmp_path):
    result = launch(tmp_path, "--model_size", "hybrid-huge")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").glob("*.pid"))


def test_foreground_runs_to_completion(tmp_path):
    result = launch(tmp_path, "--foreground", "--model_size", "hybrid-tiny", "--training_preset", "muon_smoke",
                    "--max_steps", "2", "--save_steps", "2", "--eval_steps", "2", "--max_train_examples", "200",
                    "--max_eval_examples", "8", "--output_dir", "checkpoints/fg")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "checkpoints" / "fg" / "final" / "config.json").is_file()
    assert (tmp_path / "logs" / "fg.log").is_file() and not (tmp_path / "logs" / "fg.pid").exists()


def test_status_without_runs_is_an_empty_listing(tmp_path):
    """--status lists runs: none is an answer (stdout, exit 0), not an error."""
    result = launch(tmp_path, "--status")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"no runs in {tmp_path / 'logs'}\n", "")


@pytest.mark.parametrize("cmd", ["--stop", "--tail"])
def test_stop_and_tail_without_runs_are_errors(tmp_path, cmd):
    """--stop / --tail act on a run (default: the newest): with none, a one-line error on stderr and exit 2."""
    result = launch(tmp_path, cmd)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"error: no runs in {tmp_path / 'logs'}; start one with ./train_background.sh <flags>\n")


@pytest.mark.parametrize("cmd", ["--status", "--stop", "--tail"])
def test_unknown_run_name_is_an_error(tmp_path, cmd):
    (tmp_path / "logs").mkdir()
    result = launch(tmp_path, cmd, "nope")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"error: no run 'nope' in {tmp_path / 'logs'} (see ./train_background.sh --status)\n"
