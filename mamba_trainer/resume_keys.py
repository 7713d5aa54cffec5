"""Truthful resume logs: "missing keys" that are tied or shared weights restored through their alias.

safetensors stores a tensor shared by several names once (Zamba2's shared transformer block, a tied
lm_head), so loading a checkpoint reports the other names as missing although every weight is restored.
"""

from __future__ import annotations

from torch import nn


def unrestored_keys(model: nn.Module, missing: list[str]) -> list[str]:
    """The missing keys that share their tensor with no loaded name: weights the checkpoint really lacks."""
    aliases: dict[int, set[str]] = {}
    tensors = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))
    for name, t in tensors:
        aliases.setdefault(id(t), set()).add(name)
    by_name = {name: aliases[id(t)] for name, t in tensors}
    missing_set = set(missing)
    return [k for k in missing if not (by_name.get(k, {k}) - missing_set)]


def resume_keys_message(model: nn.Module, missing: list[str]) -> str | None:
    """One line when every missing key is a tied/shared alias of a loaded weight; None when some are not."""
    if not missing or unrestored_keys(model, missing):
        return None
    return (f"checkpoint loaded: all weights restored ({len(missing)} tied/shared names, e.g. {missing[0]!r}, "
            "are stored once under another name)")
