"""What a `Muon` param group may hold: the checks run when a group is added (and momentum at every step), and the
names its parameters go by in messages and reports."""

from __future__ import annotations

import math

import torch

from optimizers.errors import MuonConfigError
from optimizers.functional import ADJUST_LR, UPDATE_OPTIONS, option
from optimizers.orthogonalize import check_method, get_backend
from optimizers.precision import resolve_dtype


def param_names(group: dict, index: int) -> list[str]:
    """The names of a group's parameters: its ``param_names``, else ``group<index>.param<i>``."""
    return list(group.get("param_names") or [f"group{index}.param{i}" for i in range(len(group["params"]))])


def check(ok: bool, message: str) -> None:
    if not ok:
        raise MuonConfigError(message)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_adamw_hyper(group: dict, where: str) -> None:
    """AdamW's betas and eps: of an AdamW group, or of a Muon group's AdamW-updated row blocks."""
    b1, b2 = group["betas"]
    check(0 <= b1 < 1 and 0 <= b2 < 1, f"{where}: AdamW betas must be in [0, 1), got {group['betas']!r}")
    check(_is_number(group["eps"]) and group["eps"] > 0, f"{where}: eps must be > 0, got {group['eps']!r}")


def check_momentum(group: dict) -> None:
    m = group["momentum"]
    check(_is_number(m) and 0 <= m < 1, f"param group {group['name']!r}: momentum must be in [0, 1), got {m!r}")


def check_group(group: dict, names: list[str]) -> None:
    """Validate one param group; every message is one line naming the group and the fix."""
    where = f"param group {group['name']!r}"
    check(_is_number(group["lr"]) and group["lr"] > 0, f"{where}: lr must be a number > 0, got {group['lr']!r}")
    check(_is_number(group["weight_decay"]) and group["weight_decay"] >= 0,
          f"{where}: weight_decay must be >= 0, got {group['weight_decay']!r}")
    if not group["use_muon"]:
        _check_adamw_hyper(group, where)
        return
    check_momentum(group)
    get_backend(group["backend"])  # raises with the list of valid names
    steps = group["ns_steps"]
    check(steps is None or (isinstance(steps, int) and steps >= 1),
          f"{where}: ns_steps must be a positive integer or None, got {steps!r}")
    check(group["adjust_lr"] in ADJUST_LR,
          f"{where}: unknown adjust_lr {group['adjust_lr']!r}; valid: {', '.join(ADJUST_LR)}")
    beta2 = group["beta2"]
    check(beta2 is None or (_is_number(beta2) and 0 <= beta2 < 1),
          f"{where}: beta2 (NorMuon) must be in [0, 1) or None, got {beta2!r}")
    resolve_dtype(group["compute_dtype"], torch.device("cpu"))
    check_method(group["ns_method"])
    for name, spec in UPDATE_OPTIONS.items():
        check(spec.valid(option(group, name)), f"{where}: {name} must be {spec.expected}, got {option(group, name)!r}")
    _check_row_blocks(group, names, where)
    for p, name in zip(group["params"], names):
        matrix = p.ndim in (2, 3) and min(p.shape[-2:]) > 1
        check(matrix, f"{where}: parameter {name!r} with shape {tuple(p.shape)} is not a matrix (or a stack of "
                      "matrices); Muon only takes hidden weight matrices, put it in an AdamW group (use_muon=False)")


def _check_row_blocks(group: dict, names: list[str], where: str) -> None:
    """row_blocks, row_interleave and adamw_blocks (fused projections updated per block)."""
    blocks = group["row_blocks"]
    if blocks is not None:
        check(isinstance(blocks, (list, tuple)) and len(blocks) == len(group["params"]),
              f"{where}: row_blocks must be a list with one entry (None or row counts) per parameter")
        check(group["beta2"] is None and not group["fan_in_first"],
              f"{where}: row_blocks cannot be combined with NorMuon (beta2) or fan_in_first; drop one of them")
        for p, name, sizes in zip(group["params"], names, blocks):
            check(sizes is None or (p.ndim == 2 and all(isinstance(k, int) and k > 0 for k in sizes)
                                    and sum(sizes) == p.shape[0]),
                  f"{where}: row_blocks for {name!r} must be positive row counts summing to its {p.shape[0]} rows, "
                  f"got {sizes!r}")
    interleave = group.get("row_interleave")
    if interleave is not None:
        check(blocks is not None and isinstance(interleave, (list, tuple)) and len(interleave) == len(group["params"]),
              f"{where}: row_interleave needs row_blocks and one entry (None or a group count) per parameter")
        for name, sizes, k, picked in zip(names, blocks, interleave, group["adamw_blocks"] or [None] * len(blocks)):
            check(k is None or (sizes is not None and isinstance(k, int) and k >= 1
                                and all(size % k == 0 for size in sizes)),
                  f"{where}: row_interleave for {name!r} must be a count that divides every block of {sizes!r} "
                  f"(the rows repeat the block pattern that many times), got {k!r}")
            check(k in (None, 1) or not picked,
                  f"{where}: {name!r} has both row_interleave and adamw_blocks; interleaved blocks stay on Muon")
    adamw_blocks = group["adamw_blocks"]
    if adamw_blocks is not None:
        check(blocks is not None and isinstance(adamw_blocks, (list, tuple))
              and len(adamw_blocks) == len(group["params"]),
              f"{where}: adamw_blocks needs row_blocks and one entry (None or block indices) per parameter")
        for name, sizes, picked in zip(names, blocks, adamw_blocks):
            check(picked is None or (sizes is not None and all(isinstance(i, int) and 0 <= i < len(sizes)
                                                               for i in picked)),
                  f"{where}: adamw_blocks for {name!r} must be indices into its row_blocks {sizes!r}, got {picked!r}")
        check(_is_number(group["adamw_lr_ratio"]) and group["adamw_lr_ratio"] > 0,
              f"{where}: adamw_lr_ratio (AdamW-updated rows' lr / the group's lr) must be > 0, "
              f"got {group['adamw_lr_ratio']!r}")
        _check_adamw_hyper(group, where)
