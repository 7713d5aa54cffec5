"""configs/lr_rule.py and its use by mamba-train: lrs stated at --lr_width are carried to the model's width, printed
and recorded; lrs typed on the command line stay as typed unless --lr_width is typed too."""

import json
from pathlib import Path

import pytest

from configs import lr_rule
from configs.model_configs import TRAINING_CONFIGS
from mamba_trainer.args import parse_args
from mamba_trainer.learning_rates import apply_lr_rule, describe_lrs

SMOKE = ["--model_size", "hybrid-tiny", "--training_preset", "muon_smoke"]


def test_carry_follows_the_exponents(monkeypatch):
    monkeypatch.setitem(lr_rule.WIDTH_EXPONENTS, "mamba2", {"muon": 0.5, "adamw": -1.0})
    assert lr_rule.carry(0.02, 256, 1024, "mamba2", "muon") == pytest.approx(0.04)
    assert lr_rule.carry(4e-3, 256, 1024, "mamba2", "adamw") == pytest.approx(1e-3)
    assert lr_rule.carry(4e-3, 256, 1024, "zamba2", "adamw") == pytest.approx(1e-3)  # default entry
    assert lr_rule.carry(0.02, 256, 1024, "zamba2", "muon") == 0.02
    with pytest.raises(ValueError, match="side must be one of"):
        lr_rule.exponent("zamba2", "sgd")


def test_no_builtin_preset_carries_its_lrs_yet():
    """The built-in presets apply their lrs as written until the study's rule is measured (then they state a width)."""
    from configs.training_presets import PRESETS  # the built-in names (presets files may add others in this session)

    assert all(TRAINING_CONFIGS[name]["lr_width"] is None for name in PRESETS) or lr_rule.MEASURED


@pytest.mark.parametrize("extra, lr, adamw_lr, reasons", [
    ([], 2e-2, 5e-4, ("width-free", "x (192/96)^-1 = 0.0005")),  # the preset's lrs, carried from width 96
    (["--learning_rate", "0.05"], 5e-2, 5e-4, ("as given", "x (192/96)^-1")),  # typed: as typed
    (["--learning_rate", "0.05", "--lr_width", "96"], 5e-2, 5e-4, ("width-free", "x (192/96)^-1")),
    (["--adamw_lr", "0.004", "--lr_width", "384"], 2e-2, 8e-3, ("at width 384", "x (192/384)^-1 = 0.008")),
])
def test_apply_lr_rule_carries_preset_values_and_keeps_typed_ones(tmp_path, extra, lr, adamw_lr, reasons):
    presets = tmp_path / "p.yaml"
    presets.write_text("training:\n  muon_at96:\n    base: muon_smoke\n    lr_width: 96\n")
    parsed = parse_args(["--presets_file", str(presets), "--model_size", "hybrid-tiny", "--training_preset",
                         "muon_at96", *extra])
    lrs = apply_lr_rule(parsed, "muon", 192, "zamba2")
    assert (parsed.training.learning_rate, parsed.muon.adamw_lr) == (pytest.approx(lr), pytest.approx(adamw_lr))
    assert reasons[0] in lrs["reasons"]["learning_rate"] and reasons[1] in lrs["reasons"]["adamw_lr"]
    line = describe_lrs(lrs)
    assert line.startswith("learning rates for width 192: lr ") and "configs/lr_rule.py" in line


def test_without_lr_width_nothing_is_carried():
    parsed = parse_args(SMOKE)
    assert apply_lr_rule(parsed, "muon", 192, "zamba2") is None
    assert (parsed.training.learning_rate, parsed.muon.adamw_lr) == (2e-2, 1e-3)
    adamw = parse_args([*SMOKE, "--optimizer", "adamw", "--learning_rate", "0.004", "--lr_width", "96"])
    lrs = apply_lr_rule(adamw, "adamw", 192, "mamba2")  # AdamW on everything: the adamw side's exponent
    assert adamw.training.learning_rate == pytest.approx(2e-3) and lrs["adamw_lr"] is None


@pytest.mark.integration
def test_a_run_trains_prints_and_records_the_carried_lrs(tmp_path, monkeypatch, capsys):
    """mamba-train with --lr_width: the optimizer's groups get the carried lrs, the line says so, run_config.json
    records them, and the reuse check (run_settings) sees the same settings as the run."""
    from mamba_trainer.run_settings import first_difference, recorded_settings, settings_of
    from mamba_trainer.train import main

    monkeypatch.chdir(tmp_path)
    argv = [*SMOKE, "--lr_width", "96", "--max_steps", "3", "--warmup_steps", "1", "--save_strategy", "no",
            "--eval_strategy", "no", "--logging_steps", "1", "--max_train_examples", "40", "--seed", "3"]
    assert main([*argv, "--output_dir", "run"]) == 0
    out = capsys.readouterr().out
    assert "learning rates for width 192: lr 0.02 (0.02 at width 96, width-free), AdamW side 0.0005" in out
    run = Path("run")
    config = json.loads((run / "run_config.json").read_text())
    assert config["learning_rates"]["adamw_lr"] == pytest.approx(5e-4) and config["muon"]["adamw_lr"] == 5e-4
    groups = json.loads((run / "optimizer.json").read_text())["groups"]
    assert {g["lr"] for g in groups if not g.get("use_muon")} == {5e-4}
    assert {g["lr"] for g in groups if g.get("use_muon")} == {2e-2}
    logged = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in logged if r.get("step") == 2 and "lr_adamw" in r)  # step 2: the peak, after warmup
    assert first["lr_adamw"] == pytest.approx(5e-4) and first["lr_muon"] == pytest.approx(2e-2)
    assert first_difference(recorded_settings(run), settings_of(argv, run)) is None
    other = settings_of([a if a != "96" else "48" for a in argv], run)
    assert first_difference(recorded_settings(run), other)[0] in ("muon.adamw_lr", "muon.lr_width")
