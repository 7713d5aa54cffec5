"""Named model sizes and training presets, looked up by name (the public face of ``configs``).

    from configs.model_configs import get_model_config, get_training_config, load_presets_file
    get_model_config("hybrid-tiny")["config"]["hidden_size"]         # 192
    get_training_config("muon_default", max_steps=10)["max_steps"]    # 10 (every other key from the preset)

The data lives in ``configs/model_sizes.py`` (``MODEL_CONFIGS``) and ``configs/training_presets.py`` (``BASE`` +
sparse ``PRESETS``, resolved here into ``TRAINING_CONFIGS``). An unknown name or key raises ``ConfigError``
with one line listing the valid ones.

``TRAINING_KEYS`` (``configs.settings``) is the one schema of the training keys (type, range, choices, the CLI flag and
its help); its Muon keys are the fields of ``configs.settings.MuonArguments``, which ``mamba-train`` parses. Choice
lists are their owners' (``optimizers``; ``SCHEDULERS``), read when first needed. Resolution of the presets is in
``configs.presets``, presets files in ``configs.presets_file``. Checking the built-in presets reads the choice
lists, so importing this module imports torch (``optimizers``), never transformers.

Custom presets without editing the package: ``load_presets_file("my_presets.yaml")`` (the CLI's
``--presets_file``), or ``MAMBA_TRAINER_PRESETS=a.yaml[:b.json]`` in the environment (loaded on the first
``get_*`` lookup). The file (YAML, or JSON when it ends in ``.json``)::

    training:                       # optional
      muon_custom:
        base: muon_default          # optional: start from this preset (built-in or in this file); default BASE
        learning_rate: 2.5e-3       # any training key; unknown keys and bad values are errors
        fused: whole                # older key names (fused_blocks, muon_beta2, ...) are read with a note
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
import os

from .errors import ConfigError, unknown_name_error
from .model_sizes import MODEL_CONFIGS, TOKENIZER_VOCAB_SIZES, VOCAB_MULTIPLE, hybrid_layers, padded_vocab_size
from .presets import TRAINING_CONFIGS
from .presets_file import ARCHITECTURES, load_presets_file
from .settings import (SCHEDULERS, TRAINING_KEYS, check_keys, validate_training_config,  # noqa: F401
                       with_current_names)

__all__ = ["MODEL_CONFIGS", "TRAINING_CONFIGS", "TRAINING_KEYS", "ConfigError", "get_model_config",
           "get_training_config", "load_presets_file", "validate_training_config", "PRESETS_ENV",
           "TOKENIZER_VOCAB_SIZES", "VOCAB_MULTIPLE", "padded_vocab_size", "hybrid_layers", "unknown_name_error",
           "ARCHITECTURES", "SCHEDULERS"]

PRESETS_ENV = "MAMBA_TRAINER_PRESETS"
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
    overrides = with_current_names(overrides, f"{where} override")
    check_keys(overrides, f"{where} override")
    return validate_training_config({**TRAINING_CONFIGS[name], **overrides}, where)
