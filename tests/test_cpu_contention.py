"""The note a CPU run prints when other work leaves fewer idle cores than torch has threads (a 2-thread run beside
one busy core waits on its descheduled thread after every op). Unit cases, then the line in a real run's output."""

import os
import subprocess
import sys
import time

import pytest
import torch

from mamba_trainer.rundir import cpu_contention_note, environment


@pytest.fixture
def machine(monkeypatch):
    """A machine of ``cores`` cores whose 1-minute load average is ``load`` and whose other processes keep ``busy``
    cores busy now (``load`` when not given)."""
    def make(cores, load, busy=None):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
        monkeypatch.setattr(environment, "busy_cores", lambda interval=0.25: load if busy is None else busy)
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


@pytest.mark.parametrize("cores, load, busy, threads, env", [
    (2, 0.3, 0.0, 2, {}),  # an idle machine (this process's own import start-up is in the load)
    (2, 1.1, 0.05, 2, {}),  # a burst that is over (the pip install before README's demo): load alone says nothing
    (2, 0.4, 1.0, 2, {}),  # a job started seconds ago: not yet "other work" by the load
    (2, 1.2, 1.0, 1, {}),  # one thread: nothing waits on a sibling
    (16, 4.0, 4.0, 8, {}),  # 8 threads fit in the ~12 idle cores
    (2, 1.2, 1.0, 2, {"OMP_NUM_THREADS": "2"}),  # the user chose
])
def test_no_note_when_the_threads_fit_or_were_chosen(machine, cores, load, busy, threads, env):
    machine(cores, load, busy)
    assert cpu_contention_note(threads, env=env) is None


@pytest.mark.integration
def test_busy_cores_sees_a_spinning_process():
    """The real reading (no patch): while another process spins on one core, at least ~0.6 of a core reads busy."""
    spin = "import time\nend = time.time() + 3\nwhile time.time() < end: pass"
    spinner = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)  # let it start
        busy = environment.busy_cores(0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy is not None and 0.6 <= busy <= len(os.sched_getaffinity(0)) + 1e-9


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
