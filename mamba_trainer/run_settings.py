"""What a run computes with, so a finished run folder is reused only for the same run.

    from mamba_trainer.run_settings import first_difference, recorded_settings, settings_of
    diff = first_difference(recorded_settings(run_dir), settings_of(argv, run_dir))
    # None, or ("muon.fused_blocks", "whole", "per_block_dt_adamw"): (setting, recorded, now)

Comparing the command text is not enough: a preset or a default can change while the flags stay the same (when
``--fused_blocks auto`` became the default, a Mamba2 run made under "whole" kept its command), and the same settings
can be spelled two ways (``--fused_blocks per_block_dt_adamw`` is what "auto" gives Mamba2). So both sides are the
parsed arguments: the flags through today's parser, presets and defaults (``settings_of``), and what the run wrote
in ``run_config.json`` when it started (``recorded_settings``), with "auto" resolved to the mode that family gets.

The Muon settings are named as ``run_config.json`` files have always named them (``RECORDED_NAMES``: a field of
``MuonArguments`` under its first older name, ``fused`` as ``fused_blocks``): files written before the fields took the
optimizer's names are compared with today's runs, and what reads these settings (bench/) keeps its keys.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from configs.settings import LEGACY_KEYS

from .rundir import RunConfig

#: TrainingArguments fields that say where a run is, not what it computes: a folder renamed (a variant relabelled
#: after a default changed) still holds the same run
PLACE = frozenset({"output_dir", "logging_dir", "run_name"})
#: TrainingArguments fields that change what a run shows or keeps, not what it computes (disable_tqdm follows whether
#: stderr is a terminal unless given: a run restarted from a shell loop is the same run as one started into a log;
#: checkpoints are written without touching the training: resume is bit-exact, tests/test_kill_resume.py)
SHOWN = frozenset({"disable_tqdm", "save_strategy", "save_steps", "save_total_limit"})
#: settings that only say how the lrs were stated (--lr_width): the lrs they resolve to (training.learning_rate,
#: muon.adamw_lr) are compared, so a preset that gained an lr_width still reuses runs that trained at the same lrs
STATED = frozenset({"lr_width"})
#: MuonArguments field -> the name run_config.json files and this check have used for it
RECORDED_NAMES = {new: old for old, new in reversed(LEGACY_KEYS.items())}


def _recorded_names(muon: dict) -> dict:
    """A "muon" section with every setting under its recorded name; an old name already there wins (a file edited by
    hand, or written before the rename)."""
    return {RECORDED_NAMES.get(k, k): v for k, v in muon.items() if RECORDED_NAMES.get(k, k) == k
            or RECORDED_NAMES[k] not in muon}


def _model_type(model_size: str | None) -> str | None:
    from configs.model_configs import MODEL_CONFIGS, get_model_config

    from .models import CONFIG_CLASSES

    if model_size not in MODEL_CONFIGS:  # "custom" (--model_name_or_path): "auto" is compared as written
        return None
    return CONFIG_CLASSES[get_model_config(model_size)["architecture"]].model_type


def _resolved_muon(muon: dict, model_type: str | None) -> dict:
    from optimizers.factory import auto_fused_mode

    if muon.get("fused_blocks") == "auto" and model_type is not None:
        muon = {**muon, "fused_blocks": auto_fused_mode(model_type, normuon=muon.get("muon_beta2") is not None)}
    return muon


def settings_of(argv: list[str], run_dir: Path) -> dict:
    """The settings a ``mamba-train`` run with ``argv`` (its flags, without --output_dir) and folder ``run_dir``
    would use: parsed and finalized as ``mamba-train`` does, "auto" fused mode resolved for the model size."""
    from configs.model_configs import MODEL_CONFIGS

    from .args import parse_args
    from .finalize import finalize_training_args
    from .learning_rates import apply_lr_rule

    parsed = parse_args([*argv, "--output_dir", str(run_dir)])
    finalize_training_args(parsed, Path(run_dir))
    size, optimizer = parsed.model_size, parsed.optimizer_type
    if size in MODEL_CONFIGS:  # the lrs the run trains with: carried to the size's width as mamba-train does
        entry = MODEL_CONFIGS[size]
        apply_lr_rule(parsed, optimizer, entry["config"].get("hidden_size"), entry["architecture"])
    settings = {"run": {"model_size": size, "optimizer_type": optimizer, "training_preset": parsed.run.training_preset},
                "muon": _resolved_muon(_recorded_names(dataclasses.asdict(parsed.muon)), _model_type(size)),
                "data": dataclasses.asdict(parsed.data), "training": parsed.training.to_dict()}
    return json.loads(json.dumps(settings, default=str))  # as run_config.json holds them (tuples as lists, ...)


def recorded_settings(run_dir: Path) -> dict | None:
    """The same settings as the run in ``run_dir`` recorded them (``run_config.json``; "auto" resolved from
    ``optimizer.json``, which names the mode the optimizer used); None when the folder has no run_config.json (or
    one without these sections)."""
    from optimizers.muon import fused_mode_of

    recorded = RunConfig.load(run_dir)
    if recorded is None:
        return None
    config = recorded.raw
    if not {"model", "optimizer_type", "training_preset", "data", "training_arguments"} <= set(config):
        return None  # not written by mamba-train (or by a version before these were recorded)
    muon = _recorded_names(config.get("muon") or {})
    if muon:  # a Muon setting added since the run was made is at its default there: new knobs start off
        from configs.settings import MuonArguments

        muon = {**_recorded_names(dataclasses.asdict(MuonArguments())), **muon}
    described = Path(run_dir) / "optimizer.json"
    if muon.get("fused_blocks") == "auto" and described.is_file():
        groups = json.loads(described.read_text())
        muon["fused_blocks"] = groups.get("fused_blocks") or fused_mode_of(groups.get("groups", []))
    size = config["model"]["model_size"]
    data = dict(config["data"])
    if "packing" in data:  # a yes/no setting before packing modes: True was stream, False none
        from .data import packing_mode

        data["packing"] = packing_mode(data["packing"])
    return {"run": {"model_size": size, "optimizer_type": config["optimizer_type"],
                    "training_preset": config["training_preset"]},
            "muon": _resolved_muon(muon, _model_type(size)), "data": data,
            "training": config["training_arguments"]}


def first_difference(recorded: dict | None, now: dict) -> tuple[str, object, object] | None:
    """(setting, recorded value, value now) of the first setting that differs, or None when the run is the same.

    Only settings both sides know are compared: one the run's code did not have yet keeps the old behaviour by
    default, and ``run_config.json``'s data section also holds counts that are not flags. An AdamW run ignores the
    Muon settings. ``recorded`` None (no run_config.json) compares as the same."""
    if recorded is None:
        return None
    for part in ("run", "muon", "data", "training"):
        if part == "muon" and now["run"]["optimizer_type"] != "muon":
            continue
        old, new = recorded.get(part) or {}, now[part]
        for key in sorted(set(old) & set(new) - PLACE - SHOWN - STATED):
            if old[key] != new[key]:
                return f"{part}.{key}", old[key], new[key]
    return None
