"""Cautious weight decay (``--cautious_wd``): the knob added through the one update function, the one settings
field and this test (issue #24's check that a new Muon knob touches nothing else)."""

import pytest
import torch

from mamba_trainer.args import parse_args
from optimizers.errors import MuonConfigError
from optimizers.functional import update_scale
from optimizers.muon import Muon, create_muon_optimizer

LR, WD = 0.05, 0.5


def _one_step(p0: torch.Tensor, grad: torch.Tensor, **options) -> torch.Tensor:
    p = torch.nn.Parameter(p0.clone())
    opt = Muon([{"params": [p]}], lr=LR, momentum=0.0, nesterov=False, compute_dtype="float32", **options)
    p.grad = grad.clone()
    opt.step()
    return p.detach()


def test_decay_only_where_the_update_moves_the_weight_toward_zero():
    torch.manual_seed(0)
    p0, grad = torch.randn(24, 16), torch.randn(24, 16)
    plain_step = _one_step(p0, grad, weight_decay=0.0) - p0  # -lr·scale·O, the update without decay
    o = -plain_step / (LR * update_scale(p0.shape, "original"))
    mask = (o * p0 >= 0)
    assert 0.2 < mask.float().mean() < 0.8  # both kinds of entries occur, so the test can tell the rules apart
    expected = p0 - LR * WD * p0 * mask + plain_step
    cautious = _one_step(p0, grad, weight_decay=WD, cautious_wd=True)
    torch.testing.assert_close(cautious, expected, rtol=0, atol=1e-6)
    decoupled = _one_step(p0, grad, weight_decay=WD)
    torch.testing.assert_close(decoupled, p0 * (1 - LR * WD) + plain_step, rtol=0, atol=1e-6)
    assert (cautious - decoupled).abs().max() > 1e-3  # and the knob changes the step where it should
    torch.testing.assert_close(cautious[~mask], (p0 + plain_step)[~mask], rtol=0, atol=1e-6)


def test_off_by_default_and_groups_saved_without_it_still_step():
    torch.manual_seed(1)
    p0, grad = torch.randn(8, 8), torch.randn(8, 8)
    assert torch.equal(_one_step(p0, grad, weight_decay=WD), _one_step(p0, grad, weight_decay=WD, cautious_wd=False))
    p = torch.nn.Parameter(p0.clone())
    opt = Muon([{"params": [p]}], lr=LR, weight_decay=WD)
    state = opt.state_dict()
    for group in state["param_groups"]:
        del group["cautious_wd"]  # an optimizer.pt written before the option existed
    opt.load_state_dict(state)
    p.grad = grad.clone()
    opt.step()  # reads the option's default
    assert not torch.equal(p.detach(), p0)


def test_the_flag_reaches_the_optimizer_and_a_bad_value_is_one_line():
    parsed = parse_args(["--training_preset", "muon_smoke", "--cautious_wd", "true"])
    kwargs = parsed.muon.factory_kwargs()
    assert kwargs["cautious_wd"] is True
    model = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 10))
    opt = create_muon_optimizer(model, verbose=False, cautious_wd=True)
    assert [g["cautious_wd"] for g in opt.param_groups if g["use_muon"]] == [True]
    with pytest.raises(MuonConfigError, match="cautious_wd must be True or False, got 'yes'"):
        Muon([{"params": [torch.nn.Parameter(torch.randn(4, 4))]}], cautious_wd="yes")
    with pytest.raises(MuonConfigError, match="unknown option"):
        Muon([{"params": [torch.nn.Parameter(torch.randn(4, 4))]}], cautious_weight_decay=True)


def test_a_run_recorded_before_the_knob_existed_is_the_same_run_only_with_it_off(tmp_path):
    import json

    from mamba_trainer.run_settings import first_difference, recorded_settings, settings_of

    flags = ["--model_size", "mamba-tiny", "--training_preset", "muon_smoke"]
    now = settings_of(flags, tmp_path)
    config = {"model": {"model_size": "mamba-tiny"}, "optimizer_type": "muon", "training_preset": "muon_smoke",
              "muon": {k: v for k, v in now["muon"].items() if k != "cautious_wd"},  # written before the knob
              "data": now["data"], "training_arguments": now["training"]}
    (tmp_path / "run_config.json").write_text(json.dumps(config))
    assert first_difference(recorded_settings(tmp_path), now) is None
    changed = first_difference(recorded_settings(tmp_path), settings_of([*flags, "--cautious_wd", "true"], tmp_path))
    assert changed == ("muon.cautious_wd", False, True)
