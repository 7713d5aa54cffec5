"""kill -9 at any moment, then ``--resume latest``: the newest *whole* checkpoint is used, the line printed
says which and why a newer one was skipped, and the final weights equal those of an uninterrupted run.

The real CLI runs as a subprocess on hybrid-tiny (4 steps, checkpoints at 2 and 4); ``MAMBA_TRAINER_KILL_AT``
makes the process SIGKILL itself inside a step, an evaluation, or a checkpoint's save (tests/kill_hook.py, the run
hook conftest.py names in ``MAMBA_TRAINER_HOOKS``).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kill_hook import KILL_HOOK_ENV
from safetensors.torch import load_file

from mamba_trainer.errors import UserError
from mamba_trainer.rundir import checkpoint_problem, resolve_resume

pytestmark = pytest.mark.integration  # every test reads or makes subprocess trainings

REPO = Path(__file__).resolve().parent.parent
FLAGS = ["--model_size", "hybrid-tiny", "--training_preset", "muon_smoke", "--max_steps", "4", "--save_steps", "2",
         "--eval_steps", "2", "--logging_steps", "1", "--max_seq_length", "64", "--per_device_train_batch_size", "1",
         "--max_train_examples", "40", "--max_eval_examples", "2", "--seed", "7", "--disable_tqdm", "true"]


def train(run_dir: Path, *extra, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != KILL_HOOK_ENV}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if kill_at:
        env[KILL_HOOK_ENV] = kill_at
    return subprocess.run([sys.executable, "-m", "mamba_trainer.train", *FLAGS, "--output_dir", str(run_dir), *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "final" / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ from the uninterrupted run: {different[:5]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("kill") / "reference"
    done = train(run_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    return run_dir


@pytest.mark.parametrize("kill_at, skipped", [("step:3", None), ("eval:4", None), ("save:4", "checkpoint-4")],
                         ids=["mid-step", "mid-eval", "mid-checkpoint-write"])
def test_kill_anywhere_then_resume_latest_matches_uninterrupted(reference, tmp_path, kill_at, skipped):
    run_dir = tmp_path / "run"
    killed = train(run_dir, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (run_dir / "final").exists()
    resumed = train(run_dir, "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    line = next(ln for ln in resumed.stdout.splitlines() if ln.startswith("resuming from"))
    assert line.split(";")[0].endswith("checkpoint-2")
    if skipped:
        assert f"skipped newer incomplete {skipped}: no trainer_state.json" in line
        assert (run_dir / f"{skipped}.incomplete").is_dir()
    else:
        assert "skipped" not in line
    assert_same_weights(reference, run_dir)
    steps = [json.loads(ln).get("step") for ln in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(ln) and "eval_loss" not in json.loads(ln)]
    assert steps == [1, 2, 3, 4]  # lines logged after checkpoint-2 by the killed process were dropped


def test_truncated_optimizer_state_is_skipped(reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    shutil.rmtree(run_dir / "final")
    optimizer = run_dir / "checkpoint-4" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])
    resumed = train(run_dir, "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "skipped newer incomplete checkpoint-4: optimizer.pt is truncated or corrupt" in resumed.stdout
    assert_same_weights(reference, run_dir)


def test_checkpoint_problems_are_named(reference, tmp_path):
    good = reference / "checkpoint-2"
    assert checkpoint_problem(good) is None
    for name, damage, expected in [
        ("trainer_state.json", b"{}", "lacks global_step"),
        ("trainer_state.json", b'{"global_st', "not valid JSON"),
        ("model.safetensors", None, "model.safetensors is truncated"),
        ("scheduler.pt", b"", "scheduler.pt is truncated"),
    ]:
        bad = tmp_path / f"checkpoint-2-{expected.split()[0]}" / "checkpoint-2"
        shutil.copytree(good, bad)
        target = bad / name
        target.write_bytes(damage if damage is not None else target.read_bytes()[:-100])
        assert expected in checkpoint_problem(bad)


def test_empty_state_and_no_run_config_is_one_line(reference, tmp_path):
    """The case that used to end in ``TypeError: 'NoneType' object is not subscriptable``."""
    run_dir = tmp_path / "bare"
    shutil.copytree(reference / "checkpoint-2", run_dir / "checkpoint-2")
    (run_dir / "checkpoint-2" / "trainer_state.json").write_text("{}")
    with pytest.raises(UserError, match="run_config.json") as info:
        resolve_resume("latest", str(run_dir), tmp_path)
    assert "\n" not in str(info.value)
    shutil.copy(reference / "run_config.json", run_dir / "run_config.json")
    with pytest.raises(UserError, match="no complete checkpoint.*lacks global_step"):  # a PATH is not restarted
        resolve_resume(str(run_dir), None, tmp_path)
    (run_dir / "checkpoint-2.incomplete").rename(run_dir / "checkpoint-2")
    plan = resolve_resume("latest", str(run_dir), tmp_path)  # --resume latest starts it again (a loop must end)
    assert plan.mode == "restart" and plan.skipped == ["checkpoint-2: trainer_state.json lacks global_step, log_history"]
    assert "starting the run again from step 0" in plan.describe() and "lacks global_step" in plan.describe()


def test_restart_plans_for_resume_latest(reference, tmp_path):
    """``--resume latest`` with nothing whole to resume: a folder not there yet or without run_config.json (a
    restart loop's first launch, a kill before the run files) restarts with the flags given; a finished run is
    never restarted and answers as before."""
    for folder in (tmp_path / "new", tmp_path / "empty"):
        folder.mkdir(exist_ok=folder.name == "new")
        plan = resolve_resume("latest", str(folder), tmp_path)
        assert (plan.mode, plan.run_dir, plan.parent_config) == ("restart", folder, None)
        assert "nothing to resume" in plan.describe() and "(no run_config.json)" in plan.describe()
    finished = tmp_path / "finished"
    shutil.copytree(reference, finished, ignore=shutil.ignore_patterns("checkpoint-*"))
    with pytest.raises(UserError, match="has no complete checkpoint-N folder to resume from"):
        resolve_resume("latest", str(finished), tmp_path)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a run folder"):
        resolve_resume("latest", str(tmp_path / "a_file"), tmp_path)


@pytest.mark.parametrize("kill_at", ["step:1", "save:2"], ids=["before-first-checkpoint", "mid-first-checkpoint"])
def test_restart_loop_ends_with_the_uninterrupted_weights(reference, tmp_path, kill_at):
    """``until mamba-train FLAGS --resume latest; do :; done``: killed before its first checkpoint is whole, the
    next launch starts the run again from step 0 (once the flags match the folder's run_config.json) and ends with
    the weights of a run never killed."""
    run_dir = tmp_path / "run"
    killed = train(run_dir, "--resume", "latest", kill_at=kill_at)  # the loop's first launch: no folder yet
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    other = train(run_dir, "--resume", "latest", "--learning_rate", "0.03")
    assert other.returncode == 2 and "learning_rate" in other.stderr and "pass its flags again" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1, other.stderr
    done = train(run_dir, "--resume", "latest")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nothing whole to resume" in done.stdout and "starting the run again from step 0" in done.stdout
    assert_same_weights(reference, run_dir)
    config = json.loads((run_dir / "run_config.json").read_text())
    assert len(config["restarts"]) == 1 and config["parent_run"] is None
    steps = [json.loads(ln).get("step") for ln in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(ln) and "eval_loss" not in json.loads(ln)]
    assert steps == [1, 2, 3, 4]  # the killed start's lines are gone


def test_a_run_started_with_the_old_packing_resumes_with_it_exactly(tmp_path):
    """A run started before bfd and leak-free eval were the defaults (stream rows, eval packed the same way, a
    version-2 run_config.json that does not record eval_packing), killed mid-way and continued by today's code
    without naming either: it keeps its own rows (one line each says so) and ends with the weights of the
    uninterrupted run."""
    old = ["--packing", "stream", "--eval_packing", "same", "--max_seq_length", "256"]
    reference = train(tmp_path / "reference", *old)
    assert reference.returncode == 0, reference.stderr[-2000:]
    run_dir = tmp_path / "run"
    killed = train(run_dir, *old, kill_at="step:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    config = json.loads((run_dir / "run_config.json").read_text())  # as the code before eval_packing wrote it
    assert config["data"]["packing"] == "stream" and config["data"]["eval_packing"] == "same"
    del config["data"]["eval_packing"]
    config.update(schema_version=2, argv=[a for a in config["argv"] if a not in old[:4]])
    (run_dir / "run_config.json").write_text(json.dumps(config))
    resumed = train(run_dir, "--max_seq_length", "256", "--resume", "latest")  # today's defaults: bfd, bfd
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "data: --packing stream, as this run started (--packing bfd is the default now" in resumed.stdout
    assert "data: --eval_packing same, as this run started" in resumed.stdout
    assert "rows of 256 tokens (stream: concatenated and cut; " in resumed.stdout  # the run log's data line
    assert_same_weights(tmp_path / "reference", run_dir)
    final = json.loads((run_dir / "run_config.json").read_text())
    assert final["data"]["packing"] == "stream" and final["data"]["eval_packing"] == "same"


@pytest.mark.parametrize("rank", ["0", "1"])
def test_the_kept_rows_line_is_printed_once_per_run_not_per_process(rank, monkeypatch, capsys):
    """Under torchrun every process resolves the run: each keeps the recorded rows, only rank 0 says so."""
    from types import SimpleNamespace

    from mamba_trainer.resolve import keep_recorded_rows

    monkeypatch.setenv("RANK", rank)
    parsed = SimpleNamespace(explicit=set(), data=SimpleNamespace(packing="bfd", eval_packing="bfd"), argv=["--x"])
    keep_recorded_rows(parsed, {"data": {"packing": "stream", "eval_packing": "same"}})
    assert (parsed.data.packing, parsed.data.eval_packing) == ("stream", "same")
    assert parsed.argv == ["--x", "--packing", "stream", "--eval_packing", "same"]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == (2 if rank == "0" else 0), lines
