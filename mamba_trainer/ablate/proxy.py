"""Proxy sweeps: tune lrs on a shallow model at a named size's real width, then write them as a preset.

    muon-ablate --model_size hybrid-small-standard --proxy_layers 3 --training_preset muon_default \\
        --max_steps 300 --lr 0.01,0.02,0.04 --dataset ./my_data.jsonl \\
        --write_preset my_muon --presets_file my_presets.yaml
    mamba-train --presets_file my_presets.yaml --training_preset my_muon --model_size hybrid-small-standard ...

``--proxy_layers N`` trains ``configs.model_sizes.proxy_size(SIZE, N)`` (the size's heads, state and expansion at its
width; a hybrid uses its shared block once) instead of SIZE. The sweep folder holds the proxy as a presets file
(``proxy_presets.yaml``, the user's ``--presets_file`` entries included) that every variant loads.

``--write_preset NAME --presets_file FILE`` then adds (or replaces) preset NAME in FILE: the sweep's preset with
the best variant's lrs, both sides, stated at the proxy's width (``lr_width``), so a run at any width gets them
carried by ``configs/lr_rule.py``. Depth and horizon are not carried: the preset's steps are the base preset's.
"""

from __future__ import annotations

import copy
from pathlib import Path

from ..errors import UserError

PROXY_FILE = "proxy_presets.yaml"


def flag_value(flags: list[str], name: str) -> str | None:
    value = None
    for i, token in enumerate(flags):
        if token == f"--{name}" and i + 1 < len(flags):
            value = flags[i + 1]
        elif token.startswith(f"--{name}="):
            value = token.split("=", 1)[1]
    return value


def without_flag(flags: list[str], name: str) -> list[str]:
    out, skip = [], False
    for token in flags:
        if skip:
            skip = False
        elif token == f"--{name}":
            skip = True
        elif not token.startswith(f"--{name}="):
            out.append(token)
    return out


def _read_presets(path: Path) -> dict:
    import yaml

    from configs.model_configs import ConfigError, load_presets_file

    if not path.is_file():
        return {}
    try:
        load_presets_file(path)  # the same checks mamba-train makes, one line on a bad file
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    return yaml.safe_load(path.read_text()) or {}


def proxy_base_flags(base_flags: list[str], layers: int, sweep_dir: Path) -> list[str]:
    """The base flags of a proxy sweep: ``--model_size`` and ``--presets_file`` point at the proxy in
    ``sweep_dir/PROXY_FILE`` (written here, with the entries of the user's ``--presets_file``)."""
    import yaml

    from configs.model_configs import MODEL_CONFIGS, load_presets_file, unknown_name_error
    from configs.model_sizes import proxy_size

    if layers < 1:
        raise UserError(f"--proxy_layers {layers}: must be at least 1")
    user_file = flag_value(base_flags, "presets_file")
    data = copy.deepcopy(_read_presets(Path(user_file))) if user_file else {}
    size = flag_value(base_flags, "model_size")
    if size is None:
        raise UserError("--proxy_layers needs --model_size SIZE: the named size whose width the proxy keeps")
    if size not in MODEL_CONFIGS:
        raise UserError(f"--model_size: {unknown_name_error('model size', size, MODEL_CONFIGS)}")
    name = f"{size}-proxy{layers}"
    models = data.setdefault("models", {}) or {}
    data["models"] = models
    models[name] = proxy_size(size, layers, chunk_size=None)
    if models[name]["base"] in models:  # a size from the user's file: the proxy's base must come first
        models[name] = models.pop(name)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / PROXY_FILE
    path.write_text("# written by muon-ablate --proxy_layers: the user's presets file plus the proxy size\n"
                    + yaml.safe_dump(data, sort_keys=False))
    load_presets_file(path)
    flags = without_flag(without_flag(base_flags, "model_size"), "presets_file")
    return [*flags, "--model_size", name, "--presets_file", str(path)]


def preset_from_best(data: dict, sweep_dir: Path, preset_name: str) -> tuple[dict, str]:
    """(preset entry, one line saying what was transferred) from a report's data (``build_report``): the best
    variant's lrs as its run recorded them, at the width of the model it trained."""
    from ..jsonio import read_json
    from ..rundir import RunConfig

    best = next((r for r in data["variants"] if r.get("rank") == 1), None)
    if best is None:
        raise UserError(f"no variant of {sweep_dir} finished with an eval loss; nothing to write")
    config = RunConfig.read(Path(sweep_dir) / best["run_dir"]).raw
    final = read_json(Path(sweep_dir) / best["run_dir"] / "final" / "config.json", {})
    width = final.get("hidden_size")
    if width is None:
        raise UserError(f"{best['run_dir']}: no final/config.json with hidden_size; rerun the sweep to finish it")
    lr = config["training_arguments"]["learning_rate"]
    entry = {"base": config["training_preset"], "learning_rate": float(f"{lr:.6g}"), "lr_width": int(width)}
    adamw_lr = (config.get("muon") or {}).get("adamw_lr")
    if config["optimizer_type"] == "muon" and adamw_lr is not None:
        entry["adamw_lr"] = float(f"{adamw_lr:.6g}")
    entry["optimizer"] = config["optimizer_type"]
    sides = f"lr {entry['learning_rate']:g}" + (f", AdamW side {entry['adamw_lr']:g}" if "adamw_lr" in entry else "")
    line = (f"preset {preset_name}: {sides} from '{best['variant']}' (eval loss {best['val_loss']:.4f}, best of "
            f"{sum(1 for r in data['variants'] if r.get('rank'))}), stated at width {width} (lr_width): a run at "
            "another width gets them carried by configs/lr_rule.py; depth and horizon are not carried "
            f"(max_steps and the schedule are {entry['base']}'s)")
    swept, full = config["training_arguments"].get("max_steps"), _preset_steps(entry["base"])
    if swept and full and full > swept:
        line += (f". The sweep ran {swept} steps, the preset runs {full:,}: the best lr fell with the horizon on every "
                 "side the lr study measured (docs/benchmarks.md; Muon's about as 1/steps from 300 to 2,400 steps), "
                 "so for the full run these lrs are an upper bound")
    return entry, line


def _preset_steps(name: str) -> int | None:
    from configs.model_configs import ConfigError, get_training_config

    try:
        return int(get_training_config(name)["max_steps"])
    except (ConfigError, KeyError):
        return None


def write_preset(path: Path, name: str, entry: dict) -> None:
    """Add or replace training preset ``name`` in the presets file ``path`` (created if absent); the file must load
    afterwards, else it is left as it was."""
    import yaml

    from configs.model_configs import ConfigError, load_presets_file

    path = Path(path)
    data = _read_presets(path)
    training = data.get("training") or {}
    training[name] = entry
    data["training"] = training
    old = path.read_text() if path.is_file() else None
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        load_presets_file(path)
    except ConfigError as exc:
        if old is None:
            path.unlink()
        else:
            path.write_text(old)
        raise UserError(f"--write_preset {name}: {exc}") from None

