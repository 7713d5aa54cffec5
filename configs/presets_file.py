"""Presets files: the training presets and model sizes of a YAML or JSON file, added to the registries.

The file's form is in ``configs.model_configs``' docstring. A file either loads completely or not at all; built-in
names cannot be redefined. Older key names (``fused_blocks``, ...) are read as today's with a one-line note.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from .errors import ConfigError, unknown_name_error
from .model_sizes import MODEL_CONFIGS
from .presets import TRAINING_CONFIGS, resolve_training
from .text import one_line as _one_line

ARCHITECTURES = ("zamba2", "mamba2")
_BUILTIN = {"training": frozenset(TRAINING_CONFIGS), "models": frozenset(MODEL_CONFIGS)}
#: the named sizes this package ships (a presets file may add others to MODEL_CONFIGS for the process)
BUILTIN_MODELS = _BUILTIN["models"]


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
        new_training = {name: resolve_training(name, training, done) for name in training}
        all_models = {k: v for k, v in MODEL_CONFIGS.items() if k not in models}
        new_models = {}
        for name, entry in models.items():  # in file order: a base must come first
            new_models[name] = all_models[name] = _resolve_model(name, entry, all_models)
    except ConfigError as exc:
        raise ConfigError(f"presets file {path}: {exc}") from None
    TRAINING_CONFIGS.update(new_training)
    MODEL_CONFIGS.update(new_models)
    return {"training": list(new_training), "models": list(new_models)}
