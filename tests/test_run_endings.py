"""How a run ends, without training: the time budget with a fake clock, the divergence and graceful-stop callbacks
on a ``TrainerControl``, ``outcome()`` for every ending, and ``train_to_outcome`` / ``finish`` around a stand-in
trainer. The end-to-end runs are in test_schedule_by_time.py (time budget) and test_ablate.py (a divergent variant).
"""

import json
import math
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import TrainerControl

from mamba_trainer import callbacks as cb
from mamba_trainer import rundir
from mamba_trainer import train as cli

import kill_hook  # tests/kill_hook.py (conftest puts tests/ on the path)
from mamba_trainer.callbacks import DivergenceCallback, GracefulStopCallback, TimeBudgetCallback
from mamba_trainer.train import Outcome, Resolved, RunCallbacks, outcome


class FakeClock:
    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(cb, "time", SimpleNamespace(perf_counter=fake))  # the callbacks' clock only
    return fake


@pytest.fixture
def signals():
    """GracefulStopCallback installs SIGTERM/SIGINT handlers in this process: put pytest's back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def args(eval_strategy="steps", save_strategy="steps"):
    return SimpleNamespace(eval_strategy=eval_strategy, save_strategy=save_strategy)


def state(step):
    return SimpleNamespace(global_step=step, is_world_process_zero=True)


# ---------------------------------------------------------------------------------------------- time budget

def test_time_budget_runs_until_spent_then_stops_evaluates_and_saves(clock):
    budget = TimeBudgetCallback(10.0)
    clock.now += 500.0  # building the model and data before train() is not counted
    budget.on_train_begin(args(), state(0), TrainerControl())
    for step, elapsed in enumerate([1.0, 4.0, 9.99], start=1):
        clock.now = 600.0 + elapsed
        control = TrainerControl()
        budget.on_step_end(args(), state(step), control)
        assert not (control.should_training_stop or control.should_evaluate or control.should_save), step
        assert not budget.spent and budget.fraction() == pytest.approx(elapsed / 10.0)
    clock.now = 610.0
    control = TrainerControl()
    budget.on_step_end(args(), state(4), control)
    assert budget.spent and control.should_training_stop and control.should_evaluate and control.should_save
    clock.now = 700.0
    assert budget.fraction() == 1.0  # the --schedule_by time clock stops at the end of the budget


@pytest.mark.parametrize("eval_strategy, save_strategy", [("no", "steps"), ("steps", "no"), ("no", "no")])
def test_time_budget_evaluates_and_saves_only_where_the_run_does(clock, eval_strategy, save_strategy):
    budget = TimeBudgetCallback(1.0)
    budget.on_train_begin(args(), state(0), TrainerControl())
    clock.now += 1.0
    control = TrainerControl()
    budget.on_step_end(args(eval_strategy, save_strategy), state(3), control)
    assert control.should_training_stop and budget.spent
    assert control.should_evaluate == (eval_strategy != "no") and control.should_save == (save_strategy != "no")


# ---------------------------------------------------------------------------------------------- divergence

def test_divergence_stops_on_a_non_finite_loss_and_names_the_step():
    div = DivergenceCallback(None)
    control = TrainerControl()
    div.on_log(args(), state(1), control, logs={"loss": 5.0})
    div.on_log(args(), state(2), control, logs={"eval_loss": math.nan})  # not a training loss: ignored
    assert div.reason is None and not control.should_training_stop
    div.on_log(args(), state(3), control, logs={"loss": math.nan})
    assert div.reason == "loss is nan at step 3" and control.should_training_stop


def test_divergence_factor_is_measured_from_the_best_loss_so_far():
    div = DivergenceCallback(3.0)
    control = TrainerControl()
    for step, loss in enumerate([6.0, 2.0, 5.9, 1.5], start=1):  # 5.9 < 3 x 2.0: noise, not divergence
        div.on_log(args(), state(step), control, logs={"loss": loss})
    assert div.reason is None and not control.should_training_stop and div.best == 1.5
    div.on_log(args(), state(5), control, logs={"loss": 4.6})  # > 3 x 1.5
    assert div.reason == "loss 4.6 at step 5 exceeds 3x its best 1.5" and control.should_training_stop
    unlimited = DivergenceCallback(None)  # without a factor only a non-finite loss stops the run
    for step, loss in enumerate([1.0, 1e6, math.inf], start=1):
        unlimited.on_log(args(), state(step), TrainerControl(), logs={"loss": loss})
    assert unlimited.reason == "loss is inf at step 3"


# ---------------------------------------------------------------------------------------------- graceful stop

def test_a_signal_stops_after_the_step_with_a_checkpoint_and_a_second_one_at_once(signals, capsys):
    stopper = GracefulStopCallback()
    assert signal.getsignal(signal.SIGTERM) == stopper._handle and signal.getsignal(signal.SIGINT) == stopper._handle
    control = TrainerControl()
    stopper.on_step_end(args(), state(1), control)
    assert not (control.should_save or control.should_training_stop)
    stopper._handle(signal.SIGTERM, None)
    assert stopper.requested and stopper.signal_name == "SIGTERM"
    assert "SIGTERM received: saving a checkpoint after this step" in capsys.readouterr().err
    stopper.on_step_end(args(), state(2), control)
    assert control.should_save and control.should_training_stop
    with pytest.raises(KeyboardInterrupt):
        stopper._handle(signal.SIGINT, None)


# ---------------------------------------------------------------------------------------------- outcome()

@pytest.mark.parametrize("diverged, stopped_by, budget_spent, reason, code, save_final", [
    (None, None, False, "completed", 0, True),
    (None, None, True, "time_budget", 0, True),
    (None, "SIGTERM", False, "stopped", 0, False),
    (None, "SIGTERM", True, "stopped", 0, False),  # a stop request wins over a budget spent at the same step
    ("loss is nan at step 2", None, False, "diverged", 3, False),
    ("loss is nan at step 2", "SIGINT", True, "diverged", 3, False),  # and a divergence over everything
])
def test_outcome_of_every_ending(diverged, stopped_by, budget_spent, reason, code, save_final):
    result = outcome(step=7, diverged=diverged, stopped_by=stopped_by, budget_spent=budget_spent,
                     output_dir=Path("runs/r"))
    assert (result.reason, result.code, result.save_final) == (reason, code, save_final)
    assert "\n" not in result.message
    if reason == "diverged":
        assert result.message == ("error: training diverged: loss is nan at step 2; lower --learning_rate (the last "
                                  "whole checkpoint is in runs/r)")
    elif reason == "stopped":
        assert result.message == (f"stopped by {stopped_by} at step 7; continue with: mamba-train --resume latest "
                                  "--output_dir runs/r")
    else:
        note = " (time budget spent)" if budget_spent else ""
        assert result.message == f"done at step 7{note}: model saved to runs/r/final"


# ---------------------------------------------------------------------------------------------- around train()

class FakeTrainer:
    """What train_to_outcome and finish use of a Trainer; ``train`` runs ``during_training`` instead of steps."""

    def __init__(self, step, during_training=None):
        self.state = SimpleNamespace(global_step=step)
        self.args = SimpleNamespace(should_log=True, should_save=True)
        self.during_training = during_training
        self.resumed_from = "not called"

    def train(self, resume_from_checkpoint=None):
        self.resumed_from = resume_from_checkpoint
        if self.during_training:
            self.during_training()

    def is_world_process_zero(self):
        return True


def run_callbacks(budget=None):
    stopper = SimpleNamespace(requested=False, signal_name=None)  # not a GracefulStopCallback: no signal handlers
    divergence = DivergenceCallback(None)
    return RunCallbacks(stopper, divergence, budget, None, [stopper, divergence] + ([budget] if budget else []))


@pytest.fixture
def no_kill_hook(monkeypatch):
    monkeypatch.delenv(kill_hook.KILL_HOOK_ENV, raising=False)


def test_an_optimizer_refusing_a_nonfinite_gradient_is_a_divergence(tmp_path, no_kill_hook):
    callbacks = run_callbacks()

    def refuse():
        raise FloatingPointError("non-finite gradient (nan/inf) in parameter 'lm_head.weight' at step 2\nmore detail")

    trainer = FakeTrainer(1, refuse)
    result = cli.train_to_outcome(trainer, Resolved("hybrid-tiny", "muon", tmp_path, None), callbacks)
    assert trainer.resumed_from is None  # a fresh run starts from no checkpoint
    assert result.reason == "diverged" and result.code == 3 and not result.save_final
    assert callbacks.divergence.reason == "non-finite gradient (nan/inf) in parameter 'lm_head.weight' at step 2"


def test_train_to_outcome_reads_the_callbacks(tmp_path, clock, no_kill_hook):
    budget = TimeBudgetCallback(5.0)
    callbacks = run_callbacks(budget)

    def spend():
        clock.now += 5.0
        budget.on_step_end(args(), state(3), TrainerControl())

    plan = SimpleNamespace(mode="continue", checkpoint=tmp_path / "checkpoint-2")
    trainer = FakeTrainer(3, spend)
    result = cli.train_to_outcome(trainer, Resolved("hybrid-tiny", "muon", tmp_path, plan), callbacks)
    assert trainer.resumed_from == str(tmp_path / "checkpoint-2")  # a continued run resumes its checkpoint
    assert result == outcome(step=3, diverged=None, stopped_by=None, budget_spent=True, output_dir=tmp_path)
    callbacks.stopper.requested, callbacks.stopper.signal_name = True, "SIGINT"
    result = cli.train_to_outcome(FakeTrainer(3), Resolved("hybrid-tiny", "muon", tmp_path, None), callbacks)
    assert result.reason == "stopped" and "stopped by SIGINT at step 3" in result.message


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_finish_after_a_divergence_records_it_saves_nothing_and_exits_3(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rundir, "save_final", lambda *a: pytest.fail("final/ written after a divergence"))
    callbacks = run_callbacks()
    callbacks.divergence.reason = "loss is nan at step 2"
    result = outcome(step=2, diverged=callbacks.divergence.reason, stopped_by=None, budget_spent=False,
                     output_dir=tmp_path)
    assert cli.finish(FakeTrainer(2), None, result, callbacks, tmp_path) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: training diverged: loss is nan at step 2")
    assert metrics(tmp_path)[-1] == {"step": 2, "event": "end", "reason": "diverged", "detail": "loss is nan at step 2"}
    assert not (tmp_path / "final").exists()


def test_finish_after_the_budget_saves_final_and_says_so(tmp_path, monkeypatch, capsys):
    saved = []
    monkeypatch.setattr(rundir, "save_final", lambda trainer, tokenizer, run_dir: saved.append(run_dir))
    rundir.append_metrics(tmp_path, {"step": 4, "loss": 2.5})
    result = outcome(step=4, diverged=None, stopped_by=None, budget_spent=True, output_dir=tmp_path)
    assert isinstance(result, Outcome)
    assert cli.finish(FakeTrainer(4), "tokenizer", result, run_callbacks(), tmp_path) == 0
    assert saved == [tmp_path]
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"done at step 4 (time budget spent): model saved to " \
                                                               f"{tmp_path / 'final'}"
    assert metrics(tmp_path)[-1] == {"step": 4, "event": "end", "reason": "time_budget", "detail": None}
    assert (tmp_path / "plots" / "training.png").is_file()  # the plot of the logged loss
