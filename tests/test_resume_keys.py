"""Resume logs: tied/shared weights that safetensors stores once are reported as restored, in one line."""

from collections import namedtuple

import pytest
from safetensors.torch import load_file

from mamba_trainer.resume_keys import resume_keys_message, unrestored_keys
from test_param_split import build

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LoadResult = namedtuple("LoadResult", ["missing_keys", "unexpected_keys"])


def _reload(model, tmp_path, drop=()):
    model.save_pretrained(tmp_path)
    state = {k: v for k, v in load_file(tmp_path / "model.safetensors").items() if k not in drop}
    return model.load_state_dict(state, strict=False)


def test_zamba2_shared_block_keys_are_restored_aliases(tmp_path):
    model = build("zamba2")
    result = _reload(model, tmp_path)
    assert any("shared_transformer" in k for k in result.missing_keys)  # the alarming list HF would print
    assert unrestored_keys(model, result.missing_keys) == []
    message = resume_keys_message(model, result.missing_keys)
    assert message and "\n" not in message and "restored" in message


def test_a_really_missing_weight_is_still_reported(tmp_path):
    model = build("llama")
    result = _reload(model, tmp_path, drop=("model.norm.weight",))
    assert unrestored_keys(model, result.missing_keys) == ["model.norm.weight"]
    assert resume_keys_message(model, result.missing_keys) is None


def test_muon_trainer_prints_one_line_instead_of_the_list(tmp_path, capsys):
    import transformers as T

    from mamba_trainer.trainer import MuonTrainer

    model = build("zamba2")
    result = _reload(model, tmp_path / "ckpt")
    trainer = MuonTrainer(model=model, args=T.TrainingArguments(str(tmp_path), report_to="none", use_cpu=True))
    trainer._issue_warnings_after_load(LoadResult(result.missing_keys, []))
    out = capsys.readouterr()
    assert out.out.count("\n") == 1 and "all weights restored" in out.out
    assert "There were missing keys" not in out.out + out.err
