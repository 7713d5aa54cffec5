"""The note a CPU run prints when other work leaves fewer idle cores than torch has threads (a 2-thread run beside
one busy core waits on its descheduled thread after every op). Unit cases, then the line in a real run's output."""

import os

import pytest
import torch

from mamba_trainer.rundir import cpu_contention_note


@pytest.fixture
def machine(monkeypatch):
    """A machine of ``cores`` cores whose 1-minute load average is ``load``."""
    def make(cores, load):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    return make


@pytest.mark.parametrize("cores, load, threads, idle", [
    (2, 1.2, 2, 1),  # one busy job on a 2-core VM (README command 1 beside a 1-thread run: several times slower)
    (2, 2.3, 2, 1),  # both cores busy: one thread at least
    (16, 8.2, 16, 8),
    (16, 12.0, 8, 4),
])
def test_threads_beyond_the_idle_cores_get_the_note(machine, cores, load, threads, idle):
    machine(cores, load)
    note = cpu_contention_note(threads, env={})
    assert note is not None and f"OMP_NUM_THREADS={idle} " in note and f"{threads} threads" in note
    assert note.startswith("note: ") and "\n" not in note


@pytest.mark.parametrize("cores, load, threads, env", [
    (2, 0.3, 2, {}),  # an idle machine (this process's own import start-up is in the load)
    (2, 1.2, 1, {}),  # one thread: nothing waits on a sibling
    (16, 4.0, 8, {}),  # 8 threads fit in the ~12 idle cores
    (2, 1.2, 2, {"OMP_NUM_THREADS": "2"}),  # the user chose
])
def test_no_note_when_the_threads_fit_or_were_chosen(machine, cores, load, threads, env):
    machine(cores, load)
    assert cpu_contention_note(threads, env=env) is None


@pytest.mark.integration
def test_a_cpu_run_prints_the_note(machine, monkeypatch, tmp_path, capsys):
    from mamba_trainer.train import main

    machine(2, 1.2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["--training_preset", "smoke", "--model_size", "hybrid-tiny", "--max_steps", "1",
                     "--max_train_examples", "16", "--max_eval_examples", "8", "--output_dir", "run"]) == 0
    finally:
        torch.set_num_threads(threads)
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: other work")]
    assert len(notes) == 1 and "OMP_NUM_THREADS=1 " in notes[0]
