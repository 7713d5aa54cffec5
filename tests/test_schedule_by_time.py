"""--schedule_by time: the LR schedule of --max_steps stretched over --time_budget (fixed-time comparisons)."""

import json
from pathlib import Path

import pytest
import torch
from transformers import get_scheduler

from mamba_trainer.ablate.spec import SweepSpec
from mamba_trainer.train import main
from mamba_trainer.trainer import time_scheduled

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cosine(total=100, warmup=10):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    return opt, get_scheduler("cosine", opt, num_warmup_steps=warmup, num_training_steps=total)


def lr_after(steps: int, clock) -> float:
    opt, sched = cosine()
    time_scheduled(sched, 100, clock)
    for _ in range(steps):
        opt.step()
        sched.step()
    return sched.get_last_lr()[0]


def reference(step: float) -> float:
    """transformers' cosine-with-warmup lambda at a (possibly fractional) step."""
    _, sched = cosine()
    return sched.lr_lambdas[0](step)


def test_time_ahead_of_steps_reads_the_schedule_at_the_time_share():
    assert lr_after(3, lambda: 0.5) == pytest.approx(reference(50.0))  # half the budget: mid-decay
    assert lr_after(3, lambda: 0.05) == pytest.approx(reference(5.0))  # warmup keeps its share of the budget
    assert lr_after(3, lambda: 1.0) == pytest.approx(0.0, abs=1e-12)  # budget spent: annealed, 3 steps in


def test_steps_ahead_of_time_follow_the_steps():
    assert lr_after(60, lambda: 0.1) == pytest.approx(reference(60))
    assert lr_after(60, lambda: 0.0) == pytest.approx(reference(60))


def test_a_non_lambda_schedule_is_refused_in_one_line():
    from mamba_trainer.errors import UserError

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(UserError, match="LambdaLR"):
        time_scheduled(torch.optim.lr_scheduler.StepLR(opt, 10), 100, lambda: 0.0)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


ARGS = ["--training_preset", "muon_smoke", "--model_size", "hybrid-tiny", "--max_steps", "100000",
        "--logging_steps", "1", "--eval_strategy", "no", "--save_strategy", "no", "--max_train_examples", "400",
        "--warmup_steps", "0", "--seed", "3"]


def logged_lrs(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["lr_muon"] for r in records if "lr_muon" in r]


def test_a_budgeted_run_ends_annealed_with_time_and_not_with_steps(workdir):
    assert main([*ARGS, "--output_dir", "by_time", "--time_budget", "4s", "--schedule_by", "time"]) == 0
    assert main([*ARGS, "--output_dir", "by_steps", "--time_budget", "4s"]) == 0
    by_time, by_steps = logged_lrs(Path("by_time")), logged_lrs(Path("by_steps"))
    peak = by_steps[0]
    assert len(by_time) >= 2 and len(by_time) < 100000
    # steps: a handful of 100000 steps taken, the cosine has barely moved; time: it fell with the clock
    assert min(by_steps) > 0.99 * peak
    assert by_time[-1] < 0.5 * peak and all(a >= b for a, b in zip(by_time, by_time[1:]))


def test_the_schedule_is_stretched_once_and_its_state_stays_torchs(tmp_path):
    """create_scheduler may be called again (HF returns the scheduler it has): the lambdas are wrapped once, and
    scheduler.pt holds only LambdaLR's own state (no marker of ours)."""
    from transformers import TrainingArguments

    from mamba_trainer.models import build_model
    from mamba_trainer.trainer import MuonTrainer

    args = TrainingArguments(output_dir=str(tmp_path), max_steps=10, report_to=[], use_cpu=True,
                             lr_scheduler_type="linear")
    trainer = MuonTrainer(model=build_model("hybrid-tiny", vocab_size=64), args=args, optimizer_type="adamw",
                          schedule_clock=lambda: 0.5)
    trainer.create_optimizer()
    first = trainer.create_scheduler(10)
    lambdas = list(first.lr_lambdas)
    assert trainer.create_scheduler(10) is first and first.lr_lambdas == lambdas  # not wrapped twice
    assert first.lr_lambdas[0](0) == pytest.approx(0.5)  # linear decay read at 0.5 x 10 steps, not at step 0
    fresh = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([torch.zeros(1)], lr=1.0), lambda s: 1.0)
    assert set(first.state_dict()) == set(fresh.state_dict())


def test_schedule_by_time_without_a_budget_is_one_line(workdir, capsys):
    assert main([*ARGS, "--output_dir", "x", "--schedule_by", "time"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--time_budget" in err
    assert not Path("x").exists()


def test_sweeps_with_a_budget_schedule_by_time_unless_told_otherwise():
    argv = SweepSpec(time_budget="5m").base_argv()
    assert argv[argv.index("--schedule_by") + 1] == "time"
    assert "--schedule_by" not in SweepSpec().base_argv()  # no budget: steps, as mamba-train's default
    mine = SweepSpec(time_budget="5m", base_flags=["--schedule_by", "steps"]).base_argv()
    assert mine.count("--schedule_by") == 1 and mine[mine.index("--schedule_by") + 1] == "steps"
