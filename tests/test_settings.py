"""One home per setting: a field of ``configs.settings.MuonArguments`` is the optimizer factory's keyword, the
``mamba-train`` flag (older names kept as aliases), the preset key (older keys read with a note), the
``muon-ablate`` factor and the ``run_config.json`` key; presets are the parser's defaults, so ``--help`` shows them.
"""

import dataclasses
import inspect
import json

import pytest

from configs.settings import LEGACY_KEYS, MUON_FIELDS, TRAINING_KEYS, MuonArguments
from configs.training_presets import BASE
from mamba_trainer.ablate.factors import ALIASES, FACTORS, factor
from mamba_trainer.args import make_parser, parse_args
from mamba_trainer.train import main
from optimizers.factory import create_muon_optimizer

from optimizers.functional import UPDATE_OPTIONS

# the update's own options (cautious_wd, ...) reach the factory by name through its **update_options
FACTORY_KEYWORDS = set(inspect.signature(create_muon_optimizer).parameters) | set(UPDATE_OPTIONS)


def test_the_muon_fields_are_the_factory_keywords_and_go_there_by_name():
    kwargs = MuonArguments().factory_kwargs()
    assert set(kwargs) <= FACTORY_KEYWORDS and {"beta2", "fused", "compute_dtype", "momentum"} <= set(kwargs)
    not_factory = {f.name for f in MUON_FIELDS} - set(kwargs)
    assert not_factory == {"momentum_warmup_start", "momentum_warmup_steps", "lr_width"}  # the run uses them itself
    parsed = parse_args(["--training_preset", "muon_smoke", "--muon_beta2", "0.9", "--fused_blocks", "whole"])
    assert {k: parsed.muon.factory_kwargs()[k] for k in ("beta2", "fused")} == {"beta2": 0.9, "fused": "whole"}


def test_every_field_is_a_preset_key_a_flag_and_a_factor():
    flags = {a.dest for a in make_parser()._actions}
    for f in MUON_FIELDS:
        assert f.name in TRAINING_KEYS and BASE[f.name] == f.default and f.name in flags
        assert factor(f.name).flag == f.name and FACTORS[f.metadata["sweep"] or f.name].flag == f.name


@pytest.mark.parametrize("old, new", sorted(LEGACY_KEYS.items()))
def test_older_names_keep_working_as_flags_factors_and_attributes(old, new):
    value = {"muon_beta2": "0.9", "fused_blocks": "whole", "muon_compute_dtype": "float32"}[old]
    by_old = parse_args(["--training_preset", "muon_smoke", f"--{old}", value])
    by_new = parse_args(["--training_preset", "muon_smoke", f"--{new}", value])
    assert by_old.muon == by_new.muon and new in by_old.explicit
    assert getattr(by_old.muon, old) == getattr(by_old.muon, new)  # the old attribute still reads
    assert ALIASES[old] == factor(new).name


def test_an_older_key_in_a_presets_file_is_read_with_a_note(tmp_path, capsys, monkeypatch):
    from configs import model_configs as mc

    monkeypatch.setattr(mc, "TRAINING_CONFIGS", dict(mc.TRAINING_CONFIGS))
    path = tmp_path / "old.yaml"
    path.write_text("training:\n  old_names:\n    base: muon_smoke\n    fused_blocks: whole\n    muon_beta2: 0.9\n")
    import configs.presets_file as pf

    monkeypatch.setattr(pf, "TRAINING_CONFIGS", mc.TRAINING_CONFIGS)
    mc.load_presets_file(path)
    preset = mc.get_training_config("old_names")
    assert (preset["fused"], preset["beta2"]) == ("whole", 0.9) and "fused_blocks" not in preset
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("note: training preset 'old_names'") for line in err)
    assert "'fused_blocks' is now called 'fused'" in err[0] + err[1]
    with pytest.raises(ValueError, match="same key"):
        mc.get_training_config("muon_smoke", beta2=0.9, muon_beta2=0.9)


def test_a_preset_is_the_parsers_defaults_and_help_shows_it(capsys):
    with pytest.raises(SystemExit):
        main(["--training_preset", "muon_demo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.02)" in out and "--training_preset muon_demo" in out  # muon_demo's lr, not BASE's 3e-4
    typed = parse_args(["--training_preset", "muon_demo", "--learning_rate", "0.01"])
    assert typed.training.learning_rate == 0.01 and typed.explicit == {"training_preset", "learning_rate"}


def test_a_bad_value_is_refused_in_python_too():
    with pytest.raises(ValueError, match="fused must be one of 'auto', 'whole'"):
        MuonArguments(fused="bogus")
    assert MuonArguments(ns_steps="3").ns_steps == 3  # normalized by the rule, as a presets file's value


def test_a_run_config_written_before_the_rename_is_the_same_run(tmp_path, monkeypatch):
    """run_config.json files from before the fields took the factory's names (muon_beta2, fused_blocks, ...) are
    compared with today's flags under those names."""
    from mamba_trainer import run_settings
    from mamba_trainer.finalize import finalize_training_args

    parsed = parse_args(["--training_preset", "muon_smoke", "--model_size", "hybrid-tiny", "--fused_blocks", "whole"])
    finalize_training_args(parsed, tmp_path)
    new = {"model": {"model_size": "hybrid-tiny"}, "optimizer_type": "muon", "training_preset": "muon_smoke",
           "data": dataclasses.asdict(parsed.data), "training_arguments": json.loads(json.dumps(
               parsed.training.to_dict(), default=str)), "muon": dataclasses.asdict(parsed.muon)}
    old = {**new, "muon": {LEGACY_NAME.get(k, k): v for k, v in new["muon"].items()}}
    for name, config in (("new", new), ("old", old)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run_config.json").write_text(json.dumps(config))
    argv = ["--training_preset", "muon_smoke", "--model_size", "hybrid-tiny", "--fused", "whole"]
    for name in ("new", "old"):
        recorded = run_settings.recorded_settings(tmp_path / name)
        assert recorded["muon"]["fused_blocks"] == "whole" and "fused" not in recorded["muon"]
        assert run_settings.first_difference(recorded, run_settings.settings_of(argv, tmp_path / name)) is None
    assert run_settings.first_difference(run_settings.recorded_settings(tmp_path / "old"), run_settings.settings_of(
        [*argv, "--beta2", "0.9"], tmp_path / "old")) == ("muon.muon_beta2", None, 0.9)


LEGACY_NAME = {new: old for old, new in LEGACY_KEYS.items()}


def test_nothing_test_only_is_left_in_the_library():
    from pathlib import Path

    import mamba_trainer

    text = "\n".join(p.read_text() for p in Path(mamba_trainer.__file__).parent.rglob("*.py"))
    assert "MAMBA_TRAINER_KILL_AT" not in text and "_save_optimizer_and_scheduler" not in text
