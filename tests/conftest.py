"""Shared test setup: the two test loops, and a suite that never reaches the Hugging Face Hub.

Two loops:

- ``python3 -m pytest -q -m "not integration"``: the fast unit loop (well under a minute on 2 idle cores), for
  checking a change to a function. Nothing in it trains, starts a process or runs torchrun.
- ``python3 -m pytest -q``: everything (what CI and the README run), the ``integration`` tests too: real
  trainings on *-tiny models, subprocesses, torchrun (a few minutes on 2 idle cores).

A test that trains a model (``Trainer.train``), starts a process or runs torchrun is marked ``integration`` (at
module level with ``pytestmark = pytest.mark.integration`` where the whole module does). The mark is checked:
outside ``integration`` tests, ``Trainer.train`` and starting a process (other than the ``git`` and ``uname`` that
environment.json asks) fail the test with a message saying so, setup of their fixtures included. Logic that a
training run would check but that has a pure form (how a run ends: ``outcome()``, the callbacks with a fake
clock; the schedule stretched over time; reuse of a finished run; the optimizer's groups and state) is tested
without training, and one end-to-end run per behaviour stays in the integration tests.

``slow`` marks the longest of them (``-m "not slow"`` leaves them out; test_fsdp2_trainer.py's runs only when
selected with ``-m slow``); a ``slow`` test is an ``integration`` test too.

The hub libraries read the offline variables once, at import: setting them here, before any test module imports
transformers or datasets, makes every hub lookup fail at once instead of retrying for tens of seconds. Torch runs
on one thread (OMP_NUM_THREADS=1 unless set), here and in the processes the tests start.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread, here and in every process a test starts (unless OMP_NUM_THREADS says otherwise): the suite's
# models are tiny, and on a shared 2-core machine a second thread makes a training several times slower, not faster
# (as for the sweeps', the benches' and the distributed tests' own runs).
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:  # imported before this file (by a plugin): the variable came too late for it
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# The tests' run hook (tests/kill_hook.py: MAMBA_TRAINER_KILL_AT kills a run at a chosen moment), for the runs made
# here and in every process a test starts; inert unless a test sets MAMBA_TRAINER_KILL_AT.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import kill_hook  # noqa: E402

os.environ["MAMBA_TRAINER_HOOKS"] = os.pathsep.join(filter(None, [os.environ.get("MAMBA_TRAINER_HOOKS"),
                                                                   str(kill_hook.PATH)]))

# Worker scripts that tests launch with torchrun, not test modules: --doctest-modules must not import them.
collect_ignore = ["distributed"]

#: Processes a unit test may start, the milliseconds-long queries environment.json makes: ``git rev-parse HEAD``
#: (rundir.git_commit) and ``uname -p`` (platform.platform()).
ALLOWED_PROCESSES = frozenset({"git", "uname"})


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    """A ``slow`` test (a long end-to-end run) is an ``integration`` test too."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.integration)


#: The test running now when it is not an ``integration`` test (None otherwise): what the guards below check.
_unit_test = None


def _refuse(what: str):
    # pytest.fail raises a BaseException: an `except Exception` in the code under test does not swallow it
    pytest.fail(f"{_unit_test.nodeid} {what}: mark it integration (pytest.mark.integration), or test the logic "
                "without it (see tests/conftest.py)")


def _guard_popen():
    init = subprocess.Popen.__init__

    def guarded(self, args, *rest, **kwargs):
        if _unit_test is not None:
            argv = [os.fsdecode(a) for a in ([args] if isinstance(args, (str, bytes, os.PathLike)) else args)]
            if Path((" ".join(argv).split() or [""])[0]).name not in ALLOWED_PROCESSES:
                self._child_created = False  # what Popen.__del__ reads first
                _refuse(f"started a process ({' '.join(argv)[:120]})")
        init(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = guarded


def _guard_trainer(trainer_module):
    train = trainer_module.Trainer.train

    def guarded(self, *args, **kwargs):
        if _unit_test is not None:
            _refuse("trained a model (Trainer.train)")
        return train(self, *args, **kwargs)

    trainer_module.Trainer.train = guarded


class _GuardTrainerOnImport:
    """A meta path finder that guards ``Trainer.train`` once ``transformers.trainer`` is imported, however late (a
    test may import it inside itself; importing it here would slow every run that never needs it)."""

    def find_spec(self, name, path=None, target=None):
        if name != "transformers.trainer":
            return None
        sys.meta_path.remove(self)  # the real spec, found as if this finder were not here (and it is needed once)
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def exec_and_guard(module):
            exec_module(module)
            _guard_trainer(module)

        spec.loader.exec_module = exec_and_guard
        return spec


_guard_popen()
if "transformers.trainer" in sys.modules:
    _guard_trainer(sys.modules["transformers.trainer"])
else:
    sys.meta_path.insert(0, _GuardTrainerOnImport())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Outside ``integration`` tests (setup, call and teardown, module fixtures included), ``Trainer.train`` and
    starting a process fail the test: the fast loop stays fast, and the mark stays honest."""
    global _unit_test
    _unit_test = None if item.get_closest_marker("integration") else item
    try:
        return (yield)
    finally:
        _unit_test = None


@pytest.fixture
def hub_offline(monkeypatch):
    """Offline even if the environment said otherwise: the libraries' own copies of the flags are patched too."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny tensor ops: faster than two, and on a shared, oversubscribed CPU
    each multi-threaded op can wait ~20 ms for its second thread. Restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def bench_script():
    """``bench_script("convergence")``: a ``bench/<name>.py`` script imported as a module (bench/ is no package)."""
    root = Path(__file__).resolve().parents[1]

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", root / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
