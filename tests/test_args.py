"""One schema for settings: every training-preset key is a ``mamba-train`` flag whose type, default, choices, help
and checks come from ``configs.settings.TRAINING_KEYS`` (the Muon keys: the fields of ``MuonArguments``), whose
choice lists come from the owning modules."""

import dataclasses
import threading
import time
import typing

import pytest
from transformers import TrainingArguments

from configs.model_configs import TRAINING_KEYS, get_training_config
from configs.training_presets import BASE, SCHEDULERS
from mamba_trainer import args as cli_args
from mamba_trainer.args import ARG_CLASSES, MuonArguments, flag_of, make_parser, parse_args
from mamba_trainer.train import main
from optimizers import BACKENDS
from optimizers.factory import FUSED_MODES, OPTIMIZER_TYPES
from optimizers.functional import ADJUST_LR
from optimizers.newton_schulz import METHODS
from optimizers.precision import COMPUTE_DTYPES

OWNERS = {"optimizer": OPTIMIZER_TYPES, "backend": BACKENDS, "adjust_lr": ADJUST_LR, "fused": FUSED_MODES,
          "compute_dtype": COMPUTE_DTYPES, "ns_method": METHODS, "lr_scheduler_type": SCHEDULERS}


def actions(parser=None) -> dict:
    """dest -> the action of its ``--flag`` (not the ``--no_flag`` of a bool)."""
    found = {}
    for action in (parser or make_parser())._actions:
        found.setdefault(action.dest, action)
    return found


def error_line(argv, capsys) -> str:
    """What ``mamba-train`` prints for bad input: exit status 2 and exactly one ``error:`` line."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own checks exit from inside the parser
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error:"), err
    return err


def test_every_preset_key_is_a_flag():
    flags = actions()
    assert [key for key in TRAINING_KEYS if flag_of(key) not in flags] == []


def test_our_preset_flags_take_type_and_default_from_the_schema():
    """The fields we declare (MuonArguments, --optimizer, --max_seq_length) read the rule and BASE; nullable keys
    default to None, since the preset passes no flag for a None value."""
    ours = {f.name: (f, typing.get_type_hints(cls)[f.name])
            for cls in ARG_CLASSES if cls is not TrainingArguments for f in dataclasses.fields(cls)}
    declared = [key for key in TRAINING_KEYS if flag_of(key) in ours]
    assert {"optimizer", "max_seq_length", "momentum", "fused"} <= set(declared)
    assert {f.name for f in dataclasses.fields(MuonArguments)} <= set(declared)
    for key in declared:
        rule, (fld, hint) = TRAINING_KEYS[key], ours[flag_of(key)]
        assert hint == (rule.type | None if rule.nullable else rule.type), key
        assert fld.default == (None if rule.nullable else BASE[key]), key
        assert fld.metadata["help"] == rule.help and rule.help, key


def test_none_in_a_preset_leaves_the_flag_none():
    assert parse_args(["--training_preset", "smoke"]).muon.adamw_lr is None
    assert parse_args(["--training_preset", "muon_smoke"]).muon.adamw_lr == 1e-3


@pytest.mark.parametrize("key", list(OWNERS))
def test_help_lists_the_owners_choices(key, capsys):
    owner = tuple(OWNERS[key])
    assert tuple(TRAINING_KEYS[key].choices) == owner
    assert tuple(actions()[flag_of(key)].choices) == owner
    with pytest.raises(SystemExit):
        main(["--training_preset", "smoke", "--help"])
    assert f"--{flag_of(key)} {{{','.join(owner)}}}" in capsys.readouterr().out


def test_a_value_added_to_an_owner_needs_no_second_edit(monkeypatch, capsys):
    monkeypatch.setitem(BACKENDS, "my_backend", BACKENDS["newtonschulz5"])
    assert parse_args(["--training_preset", "muon_smoke", "--backend", "my_backend"]).muon.backend == "my_backend"
    with pytest.raises(SystemExit):
        main(["--training_preset", "smoke", "--help"])
    assert "my_backend" in capsys.readouterr().out


@pytest.mark.parametrize("key, value", [
    ("momentum", 1.5), ("learning_rate", -1), ("eval_interval", 0), ("max_seq_length", 12.5), ("optimizer", "sgd"),
    ("fused", "bogus"), ("lr_scheduler_type", "reduce_lr_on_plateau"), ("nesterov", "maybe"),
])
def test_a_bad_value_reads_the_same_on_the_cli_and_in_a_presets_file(key, value, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = TRAINING_KEYS[key].error(value)  # "must be <what the schema allows>, got <value>"
    on_cli = error_line(["--training_preset", "smoke", f"--{flag_of(key)}", str(value)], capsys)
    assert f"--{flag_of(key)}" in on_cli and expected in on_cli
    presets = tmp_path / "bad.yaml"
    presets.write_text(f"training:\n  bad:\n    {key}: {value}\n")
    in_file = error_line(["--presets_file", str(presets), "--training_preset", "bad"], capsys)
    assert str(presets) in in_file and f"{key} {expected}" in in_file


def test_renamed_keys_set_their_flag():
    assert cli_args.PRESET_RENAMES == {"eval_interval": "eval_steps", "save_interval": "save_steps",
                                       "label_smoothing": "label_smoothing_factor"}
    preset, parsed = get_training_config("smoke"), parse_args(["--training_preset", "smoke"])
    assert (parsed.training.eval_steps, parsed.training.save_steps) == (preset["eval_interval"], preset["save_interval"])


def test_max_steps_minus_one_trains_by_epochs_and_zero_is_refused(capsys):
    parsed = parse_args(["--training_preset", "smoke", "--max_steps", "-1", "--num_train_epochs", "2"])
    assert parsed.training.max_steps == -1 and parsed.training.num_train_epochs == 2
    assert "max_steps" in error_line(["--training_preset", "smoke", "--max_steps", "0"], capsys)


def test_parsers_built_in_threads_at_once_are_built_one_at_a_time(monkeypatch):
    """HfArgumentParser writes resolved types onto the dataclasses' shared Field objects while it builds a parser,
    so two threads parsing at once (the lr study's reuse checks) once died with ``'str' has no attribute
    '__args__'``: parse_args must build one parser at a time. The build is slowed so unlocked builds would overlap."""
    inside, most, guard = [0], [0], threading.Lock()
    build = cli_args._Parser._add_dataclass_arguments

    def slow_build(self, dtype):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.02)
        try:
            return build(self, dtype)
        finally:
            with guard:
                inside[0] -= 1

    monkeypatch.setattr(cli_args._Parser, "_add_dataclass_arguments", slow_build)
    start, results, errors = threading.Barrier(3), [], []

    def parse(preset):
        start.wait()
        try:
            results.append(parse_args(["--training_preset", preset]).training.learning_rate)
        except Exception as exc:  # noqa: BLE001  (reported by the assert below)
            errors.append(exc)

    threads = [threading.Thread(target=parse, args=(p,)) for p in ("smoke", "muon_smoke", "demo")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert most[0] == 1
    expected = [parse_args(["--training_preset", p]).training.learning_rate for p in ("smoke", "muon_smoke", "demo")]
    assert sorted(results) == sorted(expected)
