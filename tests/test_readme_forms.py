"""The README's "Muon in your own training script" blocks run as written, on a tiny Llama for two steps."""

import re
from pathlib import Path

import pytest
import torch

from test_factory import _args, _data, _llama

README = Path(__file__).parent.parent / "README.md"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blocks() -> list[str]:
    text = README.read_text()
    section = text.split("## Muon in your own training script", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_section_has_the_three_forms():
    found = blocks()
    assert len(found) == 3
    assert "MuonTrainer" in found[0] and "optimizer_cls_and_kwargs" in found[1] and "optimizers=(" in found[2]


@pytest.mark.integration
@pytest.mark.parametrize("index", range(3), ids=["MuonTrainer", "factory", "optimizers="])
def test_each_block_trains(index, tmp_path):
    model = _llama()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    scope = {"model": model, "args": _args(str(tmp_path), 2), "train_dataset": _data()}
    exec(compile(blocks()[index], f"README block {index}", "exec"), scope)  # noqa: S102 - our own README
    opt = scope["trainer"].optimizer
    assert type(getattr(opt, "optimizer", opt)).__name__ == "Muon"
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.weight,
                           before["model.layers.0.self_attn.q_proj.weight"])
