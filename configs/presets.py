"""Training presets resolved: ``BASE`` plus each preset's sparse overrides (``base`` chains), every value checked by
the schema (``configs.settings``), into ``TRAINING_CONFIGS``. No torch import."""

from __future__ import annotations

from .errors import ConfigError, unknown_name_error
from .settings import check_keys, validate_training_config, with_current_names
from .training_presets import BASE, PRESETS


def resolve_training(name: str, table: dict, done: dict, chain=()) -> dict:
    """Preset ``name`` from sparse ``table`` entries (``base`` chains), resolved presets cached in ``done``."""
    if name in done:
        return done[name]
    if name in chain:
        raise ConfigError(f"training preset '{name}': 'base' chain loops ({' -> '.join((*chain, name))})")
    where = f"training preset '{name}'"
    entry = with_current_names(dict(table[name]), where)
    base_name = entry.pop("base", None)
    if base_name is None:
        start = BASE
    elif not isinstance(base_name, str):
        raise ConfigError(f"{where}: base must be a preset name, got {base_name!r}")
    elif base_name in table or base_name in done:
        start = resolve_training(base_name, table, done, (*chain, name))
    else:
        raise ConfigError(f"{where}: base: {unknown_name_error('training preset', base_name, [*table, *done])}")
    check_keys(entry, where)
    done[name] = validate_training_config({**start, **entry}, where)
    return done[name]


#: name -> full, validated preset (BASE + overrides). Custom presets are added by load_presets_file.
TRAINING_CONFIGS: dict[str, dict] = {}
for _name in PRESETS:
    resolve_training(_name, PRESETS, TRAINING_CONFIGS)
