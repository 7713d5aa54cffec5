"""Shared test setup: the suite never reaches the Hugging Face Hub.

The hub libraries read these variables once, at import: setting them here, before any test module imports
transformers or datasets, makes every hub lookup fail at once instead of retrying for tens of seconds.
"""

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Worker scripts that tests launch with torchrun, not test modules: --doctest-modules must not import them.
collect_ignore = ["distributed"]


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
