"""Named model sizes and training presets, looked up by name, and the schema of the training keys.

    from configs.model_configs import get_model_config, get_training_config, load_presets_file
    get_model_config("hybrid-tiny")["config"]["hidden_size"]         # 192
    get_training_config("muon_default", max_steps=10)["max_steps"]    # 10 (every other key from the preset)

The data lives in ``configs/model_sizes.py`` (``MODEL_CONFIGS``) and ``configs/training_presets.py`` (``BASE`` +
sparse ``PRESETS``, resolved here into ``TRAINING_CONFIGS``). An unknown name or key raises ``ConfigError``
with one line listing the valid ones.

``TRAINING_KEYS`` is the one schema of the training keys (type, range, choices, the CLI flag and its help):
``mamba-train`` derives its flags from it and checks typed values with the same rules. Choice lists are imported
from the modules that implement them (``optimizers``; ``SCHEDULERS``), so this module imports torch, not
transformers.

Custom presets without editing the package: ``load_presets_file("my_presets.yaml")`` (the CLI's
``--presets_file``), or ``MAMBA_TRAINER_PRESETS=a.yaml[:b.json]`` in the environment (loaded on the first
``get_*`` lookup). The file (YAML, or JSON when it ends in ``.json``)::

    training:                       # optional
      muon_custom:
        base: muon_default          # optional: start from this preset (built-in or in this file); default BASE
        learning_rate: 2.5e-3       # any training key; unknown keys and bad values are errors
    models:                         # optional
      hybrid-wide:
        base: hybrid-small          # optional: start from this size; "config" below is merged key by key
        description: wider, shallower
        config: {hidden_size: 640, n_mamba_heads: 20, num_attention_heads: 10}
        # without base: architecture (zamba2|mamba2), tokenizer and config are required.
        # params (target count) is inherited only when config is not changed; otherwise give it or get None.

Built-in names cannot be redefined; a name from an earlier file can (the later file wins). A file either loads
completely or not at all.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

from optimizers import BACKENDS
from optimizers.factory import FUSED_MODES, OPTIMIZER_TYPES
from optimizers.functional import ADJUST_LR
from optimizers.newton_schulz import METHODS
from optimizers.precision import COMPUTE_DTYPES

from .errors import ConfigError, unknown_name_error  # noqa: F401  (public names of this module)
from .model_sizes import (MODEL_CONFIGS, TOKENIZER_VOCAB_SIZES, VOCAB_MULTIPLE, hybrid_layers,
                          padded_vocab_size)
from .training_presets import BASE, PRESETS, SCHEDULERS
from .text import one_line as _one_line

__all__ = ["MODEL_CONFIGS", "TRAINING_CONFIGS", "TRAINING_KEYS", "ConfigError", "get_model_config",
           "get_training_config", "load_presets_file", "validate_training_config", "PRESETS_ENV",
           "TOKENIZER_VOCAB_SIZES", "VOCAB_MULTIPLE", "padded_vocab_size", "hybrid_layers"]

PRESETS_ENV = "MAMBA_TRAINER_PRESETS"
ARCHITECTURES = ("zamba2", "mamba2")




# ---- the training-key schema -------------------------------------------------------------------------------------
# One rule per training key: the values it takes and how mamba-train shows it. The CLI (mamba_trainer.args) builds
# its flags' choices and help from these rules and checks typed values with them, so a bad value reads the same in a
# presets file and on the command line. Choice lists are the owners' own objects, never copies.
class _Rule:
    """``flag``: the mamba-train flag when it has another name; ``help``: the flag's help text (None keeps
    ``TrainingArguments``' own)."""

    nullable = False
    choices: tuple = ()

    def __init__(self, *, flag: str | None = None, help: str | None = None):
        self.flag, self.help = flag, help

    def error(self, value, text: str | None = None) -> str:
        """``must be <what>, got <value>``; ``text``: the value as the user typed it, shown instead of its repr."""
        return f"must be {self.describe()}, got {repr(value) if text is None else text}"


class _Num(_Rule):
    """A float or int rule with optional bounds; accepts numeric strings (YAML reads ``1e-3`` as a string)."""

    def __init__(self, kind, lo=None, hi=None, *, lo_open=False, hi_open=False, nullable=False, also=(), **shown):
        super().__init__(**shown)
        self.type, self.nullable, self.also = kind, nullable, tuple(also)  # also: values valid outside the bounds
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open

    def describe(self) -> str:
        text = "a number" if self.type is float else "an integer"
        if self.lo is not None and self.hi is not None:
            text += f" in {'(' if self.lo_open else '['}{self.lo}, {self.hi}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            text += f" {'>' if self.lo_open else '>='} {self.lo}"
        text += "".join(f" or {v}" for v in self.also)
        return text + (" or None" if self.nullable else "")

    def __call__(self, value):
        if value is None and self.nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        number = float(value)  # ValueError for a non-numeric string
        if not math.isfinite(number):
            raise ValueError
        if self.type is int:
            if not number.is_integer():
                raise ValueError
            number = int(number)
        if number in self.also:
            return number
        if self.lo is not None and (number < self.lo or (self.lo_open and number == self.lo)):
            raise ValueError
        if self.hi is not None and (number > self.hi or (self.hi_open and number == self.hi)):
            raise ValueError
        return number


class _Choice(_Rule):
    """One of the values of ``owner``: the tuple (or registry dict) of the module that implements them, held, not
    copied, so a value added there is valid here, and listed by ``mamba-train --help``, with no second edit."""

    def __init__(self, owner, **shown):
        super().__init__(**shown)
        self._owner = owner

    @property
    def choices(self) -> tuple:
        return tuple(self._owner)

    @property
    def type(self):
        return type(self.choices[0])

    def describe(self) -> str:
        return "one of " + ", ".join(map(repr, self.choices))

    def __call__(self, value):
        if value not in self.choices or isinstance(value, bool) != isinstance(self.choices[0], bool):
            raise ValueError
        return value


_POS, _NONNEG, _UNIT = dict(lo=0, lo_open=True), dict(lo=0), dict(lo=0, hi=1, hi_open=True)

#: training key -> rule. The keys are exactly BASE's: resolving the built-in presets fails on a missing or extra key.
TRAINING_KEYS = {
    "optimizer": _Choice(OPTIMIZER_TYPES, help="muon: Muon on the hidden weight matrices and AdamW on the rest; "
                                               "adamw / adamw_8bit: AdamW (8-bit: bitsandbytes) on every parameter."),
    "learning_rate": _Num(float, **_POS, help="Peak lr. Under --optimizer muon: Muon's lr for the hidden weight "
                                              "matrices (--adamw_lr is the lr of the rest)."),
    "weight_decay": _Num(float, **_NONNEG),
    "max_steps": _Num(int, **_POS, also=(-1,), help="Optimizer steps of the run; -1 trains --num_train_epochs "
                                                    "epochs instead (the presets set a step count)."),
    "warmup_steps": _Num(int, **_NONNEG),
    "lr_scheduler_type": _Choice(SCHEDULERS),
    "eval_interval": _Num(int, **_POS, flag="eval_steps"),
    "save_interval": _Num(int, **_POS, flag="save_steps"),
    "logging_steps": _Num(int, **_POS),
    "per_device_train_batch_size": _Num(int, **_POS),
    "gradient_accumulation_steps": _Num(int, **_POS),
    "max_seq_length": _Num(int, **_POS, help="Tokens per training sequence."),
    "adam_beta1": _Num(float, **_UNIT),
    "adam_beta2": _Num(float, **_UNIT),
    "adam_epsilon": _Num(float, **_POS),
    "max_grad_norm": _Num(float, **_NONNEG),
    "label_smoothing": _Num(float, **_UNIT, flag="label_smoothing_factor"),
    # Muon keys (read only under optimizer="muon"); mamba-train's MuonArguments has one flag per key
    "momentum": _Num(float, **_UNIT, help="Muon momentum after the warmup ramp."),
    "nesterov": _Choice((True, False), help="Nesterov momentum in Muon."),
    "backend": _Choice(BACKENDS, help="Orthogonalization backend of the Muon update."),
    "ns_steps": _Num(int, **_POS, nullable=True, help="Iterations of the backend (default: its own)."),
    "adjust_lr": _Choice(ADJUST_LR, help="Muon update scale: original = sqrt(max(1, rows/cols)) as reference Muon; "
                                         "match_rms_adamw = 0.2 sqrt(max(rows, cols)), an AdamW-like RMS; none = 1."),
    "adamw_lr": _Num(float, **_POS, nullable=True,
                     help="lr of the AdamW side (embeddings, norms, biases, SSM scalars) under Muon "
                          "(default: learning_rate / 10)."),
    "momentum_warmup_start": _Num(float, **_UNIT, help="Muon momentum at step 0, ramped linearly to --momentum."),
    "momentum_warmup_steps": _Num(int, **_NONNEG, help="Length of the momentum ramp (0 = constant)."),
    "muon_beta2": _Num(float, **_UNIT, nullable=True, help="NorMuon second-moment decay (default: off)."),
    "muon_compute_dtype": _Choice(COMPUTE_DTYPES, help="dtype of the orthogonalization; auto = bfloat16 on CUDA and "
                                                       "on CPUs with native bf16 GEMM (AVX-512 BF16/AMX), float32 "
                                                       "elsewhere."),
    "ns_method": _Choice(METHODS, help="Newton-Schulz form: plain, gram (Gram-space), or auto (gram where it needs "
                                       "fewer FLOPs)."),
    "fused_blocks": _Choice(FUSED_MODES, help="How Muon updates fused projections (Mamba2 in_proj, Zamba2 "
                                              "gate_up_proj): whole = one matrix; per_block = each row block (z, x, "
                                              "B, C, dt / gate, up) as its own matrix; per_block_dt_adamw = the same "
                                              "with in_proj's dt rows on AdamW at --adamw_lr; auto = "
                                              "per_block_dt_adamw for Mamba2, whole for the rest (measured: "
                                              "docs/benchmarks.md)."),
    "lr_width": _Num(int, **_POS, nullable=True,
                     help="Width at which --learning_rate and --adamw_lr are stated: the run carries them to the "
                          "model's width by the rule in configs/lr_rule.py and prints what it used (default: none, "
                          "the lrs apply as written). Flags given with it are carried too; without it, as given."),
}


def _check_keys(keys, where: str) -> None:
    for key in keys:
        if key not in TRAINING_KEYS:
            raise ConfigError(f"{where}: {unknown_name_error('training key', key, TRAINING_KEYS)}")


def validate_training_config(values: dict, where: str = "training config") -> dict:
    """Check every key is known and every value has the right type and range; return a normalized copy."""
    _check_keys(values, where)
    missing = sorted(set(TRAINING_KEYS) - set(values))
    if missing:
        raise ConfigError(f"{where}: missing training key(s) {', '.join(missing)}")
    out = {}
    for key, rule in TRAINING_KEYS.items():
        try:
            out[key] = rule(values[key])
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {key} {rule.error(values[key])}") from None
    return out


def _resolve_training(name: str, table: dict, done: dict, chain=()) -> dict:
    """Preset ``name`` from sparse ``table`` entries (``base`` chains), resolved presets cached in ``done``."""
    if name in done:
        return done[name]
    if name in chain:
        raise ConfigError(f"training preset '{name}': 'base' chain loops ({' -> '.join((*chain, name))})")
    entry = dict(table[name])
    base_name = entry.pop("base", None)
    if base_name is None:
        start = BASE
    elif not isinstance(base_name, str):
        raise ConfigError(f"training preset '{name}': base must be a preset name, got {base_name!r}")
    elif base_name in table or base_name in done:
        start = _resolve_training(base_name, table, done, (*chain, name))
    else:
        raise ConfigError(f"training preset '{name}': base: {unknown_name_error('training preset', base_name, [*table, *done])}")
    _check_keys(entry, f"training preset '{name}'")
    done[name] = validate_training_config({**start, **entry}, f"training preset '{name}'")
    return done[name]


#: name -> full, validated preset (BASE + overrides). Custom presets are added by load_presets_file.
TRAINING_CONFIGS: dict[str, dict] = {}
for _name in PRESETS:
    _resolve_training(_name, PRESETS, TRAINING_CONFIGS)

_BUILTIN = {"training": frozenset(TRAINING_CONFIGS), "models": frozenset(MODEL_CONFIGS)}
_env_loaded = False


def _load_env_presets() -> None:
    global _env_loaded
    paths = os.environ.get(PRESETS_ENV, "")
    if _env_loaded or not paths.strip():
        return
    for path in filter(None, paths.split(os.pathsep)):
        try:
            load_presets_file(path)
        except ConfigError as exc:
            raise ConfigError(f"{PRESETS_ENV}: {exc}") from None
    _env_loaded = True


def get_model_config(name: str) -> dict:
    """A copy of ``MODEL_CONFIGS[name]``: {"architecture", "tokenizer", "params", "description", "config"}."""
    _load_env_presets()
    if name not in MODEL_CONFIGS:
        raise unknown_name_error("model size", name, MODEL_CONFIGS)
    return copy.deepcopy(MODEL_CONFIGS[name])


def get_training_config(name: str, **overrides) -> dict:
    """The full preset ``name`` with ``overrides`` applied and validated (unknown keys are errors)."""
    _load_env_presets()
    if name not in TRAINING_CONFIGS:
        raise unknown_name_error("training preset", name, TRAINING_CONFIGS)
    where = f"training preset '{name}'"
    _check_keys(overrides, f"{where} override")
    return validate_training_config({**TRAINING_CONFIGS[name], **overrides}, where)


# ---- presets files -----------------------------------------------------------------------------------------
def _read_file(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"presets file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"presets file {path}: cannot read it ({_one_line(exc)})") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"presets file {path}: not valid JSON ({exc})") from None
    import yaml  # lazily: only presets files need it

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"presets file {path}: not valid YAML{where} ({getattr(exc, 'problem', None) or exc})") from None


def _section(data: dict, key: str, path: Path) -> dict:
    section = data.get(key) or {}
    if not isinstance(section, dict) or not all(isinstance(v, dict) for v in section.values()):
        raise ConfigError(f"presets file {path}: '{key}' must map names to mappings of keys")
    for name in section:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"presets file {path}: '{key}' has a name that is not a string: {name!r}")
        if name in _BUILTIN[key]:
            raise ConfigError(f"presets file {path}: '{name}' is a built-in {key} name; pick another name "
                              f"(use base: {name} to start from it)")
    return section


def _resolve_model(name: str, entry: dict, models: dict) -> dict:
    entry = dict(entry)
    allowed = {"base", "architecture", "tokenizer", "params", "description", "config"}
    extra = sorted(set(entry) - allowed)
    if extra:
        raise ConfigError(f"model size '{name}': unknown field(s) {', '.join(extra)}; valid fields: {', '.join(sorted(allowed))}")
    base_name = entry.pop("base", None)
    if base_name is not None:
        if not isinstance(base_name, str) or base_name not in models:
            raise ConfigError(f"model size '{name}': base: {unknown_name_error('model size', base_name, models)}")
        base = copy.deepcopy(models[base_name])
        if "config" in entry and "params" not in entry:
            base["params"] = None  # the inherited target no longer describes the changed shape
        merged = {**base, **{k: v for k, v in entry.items() if k != "config"}}
        merged["config"] = {**base["config"], **(entry.get("config") or {})}
    else:
        missing = sorted({"architecture", "tokenizer", "config"} - set(entry))
        if missing:
            raise ConfigError(f"model size '{name}': needs {', '.join(missing)} (or base: <size>)")
        merged = {"params": None, "description": "", **entry}
    if merged["architecture"] not in ARCHITECTURES:
        raise ConfigError(f"model size '{name}': architecture must be one of {', '.join(ARCHITECTURES)}, got {merged['architecture']!r}")
    if not isinstance(merged["tokenizer"], str) or not isinstance(merged["config"], dict):
        raise ConfigError(f"model size '{name}': tokenizer must be a string and config a mapping")
    params = merged["params"]
    if params is not None and (isinstance(params, bool) or not isinstance(params, int) or params <= 0):
        raise ConfigError(f"model size '{name}': params must be a positive integer or absent, got {params!r}")
    return merged


def load_presets_file(path) -> dict:
    """Add the training presets and model sizes of a YAML/JSON file (schema in the module docstring).

    Returns ``{"training": [names added], "models": [names added]}``. Raises ConfigError naming the file.
    """
    path = Path(path).expanduser()
    data = _read_file(path)
    if not isinstance(data, dict) or not data or set(data) - {"training", "models"}:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"presets file {path}: top level must be a mapping with 'training' and/or 'models', got {keys}")
    training, models = _section(data, "training", path), _section(data, "models", path)
    try:
        done = {k: v for k, v in TRAINING_CONFIGS.items() if k not in training}
        new_training = {name: _resolve_training(name, training, done) for name in training}
        all_models = {k: v for k, v in MODEL_CONFIGS.items() if k not in models}
        new_models = {}
        for name, entry in models.items():  # in file order: a base must come first
            new_models[name] = all_models[name] = _resolve_model(name, entry, all_models)
    except ConfigError as exc:
        raise ConfigError(f"presets file {path}: {exc}") from None
    TRAINING_CONFIGS.update(new_training)
    MODEL_CONFIGS.update(new_models)
    return {"training": list(new_training), "models": list(new_models)}
