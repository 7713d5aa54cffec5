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
        "--logging_steps", "1", "--eval_strategy", "steps", "--eval_steps", "100000", "--max_eval_examples", "8",
        "--save_strategy", "no", "--max_train_examples", "400", "--warmup_steps", "0", "--seed", "3"]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.integration
def test_a_budgeted_run_ends_on_time_evaluated_saved_and_annealed_with_time(workdir):
    """The end-to-end run of --time_budget (the ending itself: test_run_endings.py) and of --schedule_by time:
    a handful of 100000 steps fit, so the cosine could only have fallen with the clock."""
    assert main([*ARGS, "--output_dir", "by_time", "--time_budget", "4s", "--schedule_by", "time"]) == 0
    logs = metrics(Path("by_time"))
    by_time, end = [r["lr_muon"] for r in logs if "lr_muon" in r], logs[-1]
    assert end["event"] == "end" and end["reason"] == "time_budget" and 2 <= end["step"] < 100000
    assert [r["step"] for r in logs if "eval_loss" in r] == [end["step"]]  # evaluated where the budget ran out
    assert Path("by_time/final/config.json").is_file()
    assert len(by_time) == end["step"]
    peak = json.loads(Path("by_time/run_config.json").read_text())["training_arguments"]["learning_rate"]
    assert by_time[-1] < 0.5 * peak and all(a >= b for a, b in zip(by_time, by_time[1:]))  # fell with the clock


@pytest.mark.parametrize("schedule_by", ["time", "steps"])
def test_the_run_gives_the_trainer_the_budget_clock_only_when_scheduling_by_time(schedule_by, tmp_path, monkeypatch):
    """What mamba-train builds: with --schedule_by time the trainer's schedule clock is the budget's share spent,
    so the schedule follows the budget callback (steps: no clock, the schedule of --max_steps as it is)."""
    import signal
    import types

    from mamba_trainer import callbacks as cb
    from mamba_trainer.args import parse_args
    from mamba_trainer.models import build_model
    from mamba_trainer.tokenizer import load_tokenizer
    from mamba_trainer.train import Resolved, build_callbacks, build_trainer, finalize_training_args

    now = [0.0]
    monkeypatch.setattr(cb, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    parsed = parse_args([*ARGS, "--time_budget", "100s", "--schedule_by", schedule_by])
    finalize_training_args(parsed, tmp_path)
    resolved = Resolved("hybrid-tiny", "muon", tmp_path, None)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        callbacks = build_callbacks(parsed, resolved)  # its graceful stop takes SIGTERM/SIGINT: given back below
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert callbacks.budget.seconds == 100.0 and callbacks.budget in callbacks.all
    tokenizer = load_tokenizer("bundled")
    model = build_model("hybrid-tiny", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    trainer = build_trainer(parsed, resolved, model, tokenizer, [], [], callbacks)
    scheduler = trainer.create_scheduler(100000)
    now[0] = 50.0  # half the budget spent, no step taken
    lr = scheduler.lr_lambdas[0](0)
    _, plain = cosine(total=100000, warmup=0)
    if schedule_by == "time":  # read at half the steps: mid-decay
        assert trainer.schedule_clock() == 0.5 and lr == pytest.approx(plain.lr_lambdas[0](50000)) and lr < 0.51
    else:
        assert trainer.schedule_clock is None and lr == plain.lr_lambdas[0](0) == 1.0


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
