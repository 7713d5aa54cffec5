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
STUDY_RULE = Path(__file__).resolve().parents[1] / "bench" / "results" / "lr_transfer" / "rule.json"
EXPONENTS = {arch: dict(sides) for arch, sides in lr_rule.WIDTH_EXPONENTS.items()}  # before any test patches them


@pytest.fixture(autouse=True)
def round_exponents(monkeypatch):
    """The mechanics below are checked with round exponents (Muon 0, AdamW -1) for every architecture, whatever the
    study measured: test_the_rule_is_the_studys_fit checks the measured ones against the study's results."""
    monkeypatch.setattr(lr_rule, "WIDTH_EXPONENTS", {"default": {"muon": 0.0, "adamw": -1.0}})


def test_carry_follows_the_exponents(monkeypatch):
    monkeypatch.setitem(lr_rule.WIDTH_EXPONENTS, "mamba2", {"muon": 0.5, "adamw": -1.0})
    assert lr_rule.carry(0.02, 256, 1024, "mamba2", "muon") == pytest.approx(0.04)
    assert lr_rule.carry(4e-3, 256, 1024, "mamba2", "adamw") == pytest.approx(1e-3)
    assert lr_rule.carry(4e-3, 256, 1024, "zamba2", "adamw") == pytest.approx(1e-3)  # default entry
    assert lr_rule.carry(0.02, 256, 1024, "zamba2", "muon") == 0.02
    with pytest.raises(ValueError, match="side must be one of"):
        lr_rule.exponent("zamba2", "sgd")


def test_the_measured_exponents_are_the_studys_fit():
    """Every (architecture, side) lr_rule calls measured is the study's power-law fit through that pair's FIT_WIDTHS
    (its rule.json, written by ``python bench/lr_transfer.py --report`` from the committed runs), to 0.01: the first
    fit (widths 192 and 512) or the refit through every settled width (``fit_all``), whichever FIT_WIDTHS names."""
    fits = json.loads(STUDY_RULE.read_text())
    assert lr_rule.MEASURED, "nothing measured"
    for architecture, side in lr_rule.MEASURED:
        entry, widths = fits[f"{lr_rule.STUDY_FAMILIES[architecture]}/{side}"], lr_rule.FIT_WIDTHS[architecture, side]
        matching = [f for f in (entry.get("fit"), entry.get("fit_all"))
                    if f and sorted(f["fit_widths"]) == sorted(widths)]
        assert matching, (architecture, side, "no fit of the study through", widths)
        fit = matching[-1]
        assert EXPONENTS[architecture][side] == pytest.approx(fit["width_exponent"], abs=0.01), (architecture, side)
    unmeasured = {(a, side) for a in lr_rule.STUDY_FAMILIES for side in lr_rule.SIDES} - lr_rule.MEASURED
    assert all(EXPONENTS[a][side] == EXPONENTS["default"][side] for a, side in unmeasured)  # the hypothesis


def test_the_held_out_widths_are_the_studys_checks_within_2x():
    """HELD_OUT_WIDTHS names, per measured pair, exactly the widths where the study checked the rule through
    FIT_WIDTHS without fitting it there (rule.json "checks_all") and found it within 2x of the measured best."""
    fits = json.loads(STUDY_RULE.read_text())
    assert set(lr_rule.HELD_OUT_WIDTHS) <= lr_rule.MEASURED
    for (architecture, side), widths in lr_rule.HELD_OUT_WIDTHS.items():
        entry = fits[f"{lr_rule.STUDY_FAMILIES[architecture]}/{side}"]
        assert sorted(entry["fit_all"]["fit_widths"]) == sorted(lr_rule.FIT_WIDTHS[architecture, side])
        checks = entry["checks_all"]
        assert not set(widths) & set(lr_rule.FIT_WIDTHS[architecture, side])
        assert set(widths) == {int(w) for w, c in checks.items() if c["within_2x"]}, (architecture, side, checks)


def test_no_long_run_preset_sits_above_the_longest_horizon_best_where_every_trend_falls(monkeypatch):
    """Where the study found the best lr falling with every horizon step and with batch (rule.json
    "longest_horizon_bounds"), the best at its longest horizon at width 192, carried to 512 by the measured rule,
    bounds every long-run preset's lr on that side (stated at 512): the presets run longer and with larger batches."""
    from configs.training_presets import PRESETS

    monkeypatch.setattr(lr_rule, "WIDTH_EXPONENTS", EXPONENTS)
    bounds = json.loads(STUDY_RULE.read_text())["longest_horizon_bounds"]
    checked = 0
    for architecture, family in lr_rule.STUDY_FAMILIES.items():
        for kind in lr_rule.SIDES:
            b = bounds.get(f"{family}/{kind}")
            if not (b and b["bounds"]):
                continue
            ceiling = lr_rule.carry(b["best_192"], 192, 512, architecture, kind)
            for name in PRESETS:
                cfg = TRAINING_CONFIGS[name]
                if cfg["lr_width"] != 512:
                    continue
                keys = ["learning_rate"] if cfg["optimizer"] == kind else ["adamw_lr"] if kind == "adamw" else []
                for key in keys:
                    checked += 1
                    assert cfg[key] <= ceiling, (name, key, family, cfg[key], ceiling, b["condition"])
    assert checked >= 6  # both families' Muon side bounds the three Muon presets


def test_the_presets_state_their_width_and_every_size_gets_them_by_the_rule(monkeypatch):
    """The long-run presets state their lrs at width 512, the demo presets at 192 (the *-tiny sizes), the smoke
    presets none; at every named size a run gets the preset's lrs carried by the measured exponents, both sides."""
    from configs.model_configs import MODEL_CONFIGS
    from configs.presets_file import BUILTIN_MODELS
    from configs.training_presets import PRESETS  # the built-in names (presets files may add others in this session)
    from mamba_trainer.learning_rates import preset_lrs

    monkeypatch.setattr(lr_rule, "WIDTH_EXPONENTS", EXPONENTS)
    long_runs = ("fast", "default", "careful", "muon_fast", "muon_default", "muon_careful")
    assert {name: TRAINING_CONFIGS[name]["lr_width"] for name in PRESETS} == {
        **dict.fromkeys(long_runs, 512), "demo": 192, "muon_demo": 192, "smoke": None, "muon_smoke": None}
    for size, entry in MODEL_CONFIGS.items():
        if size not in BUILTIN_MODELS:  # sizes other tests' presets files added to this process
            continue
        width, arch = entry["config"]["hidden_size"], entry["architecture"]
        for name in (*long_runs, "demo", "muon_demo"):
            preset, got = TRAINING_CONFIGS[name], preset_lrs(size, name)
            ratio = width / preset["lr_width"]
            main_side = "muon" if preset["optimizer"] == "muon" else "adamw"
            assert got["learning_rate"] == pytest.approx(preset["learning_rate"] * ratio ** EXPONENTS[arch][main_side],
                                                         rel=1e-3), (size, name)
            if preset["optimizer"] == "muon":
                assert got["adamw_lr"] == pytest.approx(preset["adamw_lr"] * ratio ** EXPONENTS[arch]["adamw"],
                                                        rel=1e-3), (size, name)
            assert got["lrs"]["measured"] == ((arch, main_side) in lr_rule.MEASURED
                                              and (preset["optimizer"] != "muon" or (arch, "adamw") in lr_rule.MEASURED))


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


def test_the_run_line_names_the_widths_each_side_was_fitted_through(monkeypatch):
    """Each side's exponent may come from its own widths (1,024 joins a side's fit once its sweep settles): the line a
    run prints names them per side; a record written before the key still prints."""
    monkeypatch.setattr(lr_rule, "FIT_WIDTHS", {("zamba2", "muon"): (192, 512), ("zamba2", "adamw"): (192, 512, 1024)})
    lrs = lr_rule.resolve(optimizer="muon", learning_rate=0.02, adamw_lr=2e-3, lr_width=512, width=768,
                          architecture="zamba2")
    assert lrs["fit_widths"] == {"adamw": [192, 512, 1024], "muon": [192, 512]}
    assert "fitted on proxies at widths 192, 512, 1024 (AdamW); 192, 512 (Muon)" in describe_lrs(lrs)
    assert "(fitted on proxies)" in describe_lrs({**lrs, "fit_widths": None})
    hypothesis = lr_rule.resolve(optimizer="muon", learning_rate=0.02, adamw_lr=2e-3, lr_width=512, width=768,
                                 architecture="llama")
    assert hypothesis["fit_widths"] == {} and "muP-style hypothesis" in describe_lrs(hypothesis)


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
