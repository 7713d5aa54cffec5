"""Named sizes and presets as data: every entry, every lookup error, and custom presets files (no transformers)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import configs.model_configs as mc
from configs.model_configs import (MODEL_CONFIGS, TRAINING_CONFIGS, TRAINING_KEYS, ConfigError, get_model_config,
                                   get_training_config, load_presets_file)
from configs.model_sizes import TOKENIZER_VOCAB_SIZES
from configs.training_presets import BASE, PRESETS

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    return message


@pytest.fixture
def restore_registry(monkeypatch):
    """Undo what load_presets_file adds to the module-level dicts; no env presets."""
    monkeypatch.delenv(mc.PRESETS_ENV, raising=False)
    monkeypatch.setattr(mc, "_env_loaded", False)
    saved = dict(TRAINING_CONFIGS), dict(MODEL_CONFIGS)
    yield
    for live, old in zip((TRAINING_CONFIGS, MODEL_CONFIGS), saved):
        live.clear()
        live.update(old)


@pytest.mark.integration  # a fresh interpreter
def test_import_does_not_load_transformers():
    # configs imports its choice lists from optimizers (so torch), never the trainer stack
    code = "import sys, configs.model_configs; assert 'transformers' not in sys.modules, 'transformers imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    # the error every CLI catches, and the rule and sizes data, load no torch (a CLI's one-line error stays cheap)
    code = ("import sys, mamba_trainer.errors, configs.errors, configs.lr_rule, configs.model_sizes, "
            "configs.training_presets; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# ---- model sizes -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
def test_model_entry(name):
    entry = get_model_config(name)
    assert set(entry) == {"architecture", "tokenizer", "params", "description", "config"}
    assert entry["architecture"] in ("zamba2", "mamba2")
    assert entry["tokenizer"] in TOKENIZER_VOCAB_SIZES
    assert isinstance(entry["params"], int) and entry["params"] > 0
    assert entry["description"] and isinstance(entry["config"], dict)
    assert entry["config"]["use_cache"] is False  # training forward without a cache; build_model enables it for generate
    if name.endswith(("-tiny", "-tiny-2")):
        assert entry["tokenizer"] == "bundled" and entry["config"]["chunk_size"] <= 64
        assert 1_000_000 <= entry["params"] <= 5_000_000
    else:
        assert entry["tokenizer"] == "EleutherAI/gpt-neox-20b"
        assert entry["config"].get("chunk_size", 256) == 256  # GPU kernels' default


def test_ladder():
    targets = {"small": 75e6, "small-standard": 112e6, "small-pro": 165e6, "medium": 350e6}
    for family in ("hybrid", "mamba"):
        for rung, target in targets.items():
            assert MODEL_CONFIGS[f"{family}-{rung}"]["params"] == target


def test_get_model_config_returns_a_copy():
    get_model_config("hybrid-tiny")["config"]["hidden_size"] = 1
    assert MODEL_CONFIGS["hybrid-tiny"]["config"]["hidden_size"] != 1


# ---- training presets ----------------------------------------------------------------------------------------------
def test_base_has_exactly_the_rule_keys():
    assert set(BASE) == set(TRAINING_KEYS)


def test_schedulers_are_transformers_names():
    from transformers.trainer_utils import SchedulerType

    assert set(mc.SCHEDULERS) <= {s.value for s in SchedulerType}


@pytest.mark.parametrize("name", list(PRESETS))
def test_training_preset(name):
    preset = get_training_config(name)
    assert set(preset) == set(TRAINING_KEYS)
    assert preset == TRAINING_CONFIGS[name] == mc.validate_training_config(preset)
    for key in ("learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
                "label_smoothing", "momentum", "momentum_warmup_start"):
        assert isinstance(preset[key], float) and math.isfinite(preset[key]), key
    for key in ("max_steps", "warmup_steps", "eval_interval", "save_interval", "logging_steps",
                "per_device_train_batch_size", "gradient_accumulation_steps", "max_seq_length", "momentum_warmup_steps"):
        assert type(preset[key]) is int, key
    assert preset["learning_rate"] > 0 and preset["max_steps"] > 0
    assert preset["warmup_steps"] < preset["max_steps"]
    assert preset["eval_interval"] <= preset["max_steps"] and preset["save_interval"] <= preset["max_steps"]
    assert preset["momentum_warmup_start"] <= preset["momentum"]
    assert isinstance(preset["nesterov"], bool)
    if preset["optimizer"] == "muon":
        assert name.startswith("muon_") and preset["adamw_lr"] is not None
        assert preset["adamw_lr"] < preset["learning_rate"]


@pytest.mark.parametrize("name,lr,steps,optimizer", [
    ("fast", 5e-4, 50_000, "adamw"), ("default", 3e-4, 100_000, "adamw"), ("careful", 1e-4, 200_000, "adamw"),
    ("muon_fast", 9e-4, 30_000, "muon"), ("muon_default", 7.5e-4, 60_000, "muon"), ("muon_careful", 5e-4, 120_000, "muon"),
])
def test_user_guide_presets(name, lr, steps, optimizer):
    preset = get_training_config(name)
    assert (preset["learning_rate"], preset["max_steps"], preset["optimizer"]) == (lr, steps, optimizer)


def test_cpu_presets_are_small():
    for name in ("smoke", "muon_smoke"):
        p = get_training_config(name)
        assert p["max_steps"] <= 10 and p["per_device_train_batch_size"] <= 2 and p["max_seq_length"] <= 64
        assert p["eval_interval"] < p["max_steps"] and p["save_interval"] < p["max_steps"]
    for name in ("demo", "muon_demo"):
        p = get_training_config(name)
        assert 200 <= p["max_steps"] <= 300 and p["per_device_train_batch_size"] == 8 and p["max_seq_length"] == 256
    assert get_training_config("muon_smoke")["momentum_warmup_steps"] < get_training_config("muon_smoke")["max_steps"]


def test_overrides_are_applied_and_coerced():
    preset = get_training_config("muon_default", max_steps=1e3, learning_rate="2e-3", beta2=0.95)
    assert preset["max_steps"] == 1000 and type(preset["max_steps"]) is int
    assert preset["learning_rate"] == 2e-3 and preset["beta2"] == 0.95
    assert TRAINING_CONFIGS["muon_default"]["max_steps"] == 60_000  # the registry is untouched
    get_training_config("default")["learning_rate"] = 1.0
    assert TRAINING_CONFIGS["default"]["learning_rate"] == 3e-4


# ---- one-line errors ---------------------------------------------------------------------------------------------
def test_unknown_model_size():
    message = one_line_error(get_model_config, "hybrid-smal")
    assert "did you mean 'hybrid-small'" in message and all(name in message for name in MODEL_CONFIGS)


def test_unknown_training_preset():
    message = one_line_error(get_training_config, "muon_defualt")
    assert "did you mean 'muon_default'" in message and all(name in message for name in TRAINING_CONFIGS)
    assert "did you mean" not in one_line_error(get_training_config, "zzz")


def test_unknown_override_key():
    message = one_line_error(get_training_config, "default", learnig_rate=1e-3)
    assert "learnig_rate" in message and "did you mean 'learning_rate'" in message
    assert all(key in message for key in TRAINING_KEYS)


@pytest.mark.parametrize("key,value", [
    ("learning_rate", 0), ("learning_rate", -1e-3), ("learning_rate", "fast"), ("learning_rate", float("nan")),
    ("max_steps", 1.5), ("max_steps", 0), ("max_steps", True), ("warmup_steps", -1), ("adam_beta2", 1.0),
    ("label_smoothing", 1.0), ("nesterov", "yes"), ("nesterov", 1), ("optimizer", "sgd"), ("adjust_lr", "auto"),
    ("lr_scheduler_type", "cosine_annealing"), ("beta2", 1.0), ("ns_steps", 0), ("adamw_lr", 0.0),
    ("backend", ""), ("backend", "newtonschulz"), ("fused", "per-block"), ("per_device_train_batch_size", None),
])
def test_bad_override_value(key, value):
    message = one_line_error(get_training_config, "muon_default", **{key: value})
    assert key in message and "muon_default" in message


# ---- presets files ---------------------------------------------------------------------------------------------------
YAML_TEXT = """
training:
  muon_custom:
    base: muon_default
    learning_rate: 2.5e-3
  muon_custom_long:      # base defined in this same file
    base: muon_custom
    max_steps: 1e5       # YAML reads this as a string; coerced to 100000
  plain: {warmup_steps: 10}
models:
  hybrid-wide:
    base: hybrid-small
    description: wider and shallower
    config: {hidden_size: 640, n_mamba_heads: 20, num_attention_heads: 10}
  hybrid-small-copy:
    base: hybrid-small
"""


def test_load_yaml_with_base(tmp_path, restore_registry):
    path = tmp_path / "presets.yaml"
    path.write_text(YAML_TEXT)
    added = load_presets_file(path)
    assert added == {"training": ["muon_custom", "muon_custom_long", "plain"], "models": ["hybrid-wide", "hybrid-small-copy"]}
    custom = get_training_config("muon_custom")
    assert custom == {**TRAINING_CONFIGS["muon_default"], "learning_rate": 2.5e-3}
    assert get_training_config("muon_custom_long") == {**custom, "max_steps": 100_000}
    assert get_training_config("plain") == {**BASE, "warmup_steps": 10}
    wide = get_model_config("hybrid-wide")
    assert wide["config"]["hidden_size"] == 640 and wide["config"]["num_hidden_layers"] == 24
    assert wide["params"] is None  # changed shape: the inherited target no longer applies
    assert get_model_config("hybrid-small-copy") == MODEL_CONFIGS["hybrid-small"]
    assert load_presets_file(path) == added  # loading the same file again is fine


def test_load_json(tmp_path, restore_registry):
    path = tmp_path / "presets.json"
    path.write_text(json.dumps({"training": {"j": {"base": "smoke", "max_steps": 8}}, "models": {
        "m-json": {"architecture": "mamba2", "tokenizer": "bundled", "params": 1_000_000,
                   "config": {"hidden_size": 128, "num_hidden_layers": 2, "num_heads": 4}}}}))
    load_presets_file(str(path))
    assert get_training_config("j") == {**TRAINING_CONFIGS["smoke"], "max_steps": 8}
    assert get_model_config("m-json")["description"] == ""


def test_env_var(tmp_path, restore_registry, monkeypatch):
    path = tmp_path / "env.yaml"
    path.write_text("training:\n  from_env: {base: demo, max_steps: 250}\n")
    monkeypatch.setenv(mc.PRESETS_ENV, str(path))
    assert get_training_config("from_env")["max_steps"] == 250


BAD_FILES = {
    "missing": (None, "no such file"),
    "bad.yaml": ("training: [unclosed\n", "not valid YAML"),
    "bad.json": ('{"training": }', "not valid JSON"),
    "list.yaml": ("- a\n- b\n", "top level"),
    "extra.yaml": ("training: {}\nschedules: {}\n", "top level"),
    "key.yaml": ("training:\n  x: {learnig_rate: 1.0e-3}\n", "did you mean 'learning_rate'"),
    "value.yaml": ("training:\n  x: {learning_rate: -1}\n", "learning_rate must be"),
    "base.yaml": ("training:\n  x: {base: muon_defualt}\n", "did you mean 'muon_default'"),
    "basetype.yaml": ("training:\n  x: {base: [a]}\n", "base must be"),
    "loop.yaml": ("training:\n  x: {base: y}\n  y: {base: x}\n", "loops"),
    "builtin.yaml": ("training:\n  default: {max_steps: 5}\n", "built-in"),
    "model.yaml": ("models:\n  m: {tokenizer: bundled, config: {}}\n", "architecture"),
    "field.yaml": ("models:\n  m: {base: hybrid-tiny, size: 3}\n", "unknown field"),
    "arch.yaml": ("models:\n  m: {architecture: jamba, tokenizer: bundled, config: {}}\n", "zamba2"),
    "partial.yaml": ("training:\n  ok_one: {max_steps: 5}\n  bad_one: {max_steps: 0}\n", "max_steps"),
}


@pytest.mark.parametrize("filename", list(BAD_FILES))
def test_bad_presets_file(tmp_path, restore_registry, filename):
    text, expected = BAD_FILES[filename]
    path = tmp_path / filename
    if text is not None:
        path.write_text(text)
    before = set(TRAINING_CONFIGS), set(MODEL_CONFIGS)
    message = one_line_error(load_presets_file, path)
    assert str(path) in message and expected in message
    assert (set(TRAINING_CONFIGS), set(MODEL_CONFIGS)) == before  # nothing half-loaded


def test_bad_env_file_names_the_variable(tmp_path, restore_registry, monkeypatch):
    monkeypatch.setenv(mc.PRESETS_ENV, str(tmp_path / "nope.yaml"))
    message = one_line_error(get_training_config, "default")
    assert mc.PRESETS_ENV in message and "nope.yaml" in message
