"""What a `Muon` says about itself: `describe` (effective settings and parameter names per group, JSON-able),
`compute_summary` (the dtype and Newton–Schulz form per group) and `fused_mode_of`."""

from __future__ import annotations

from typing import Any

import torch

from optimizers.groups import param_names
from optimizers.newton_schulz import choose_method
from optimizers.orthogonalize import default_steps
from optimizers.precision import describe_dtype, resolve_dtype


def fused_mode_of(groups) -> str:
    """The fused mode ("whole", "per_block", "per_block_dt_adamw") that Muon groups imply, from ``param_groups`` or
    ``describe()["groups"]``: row blocks make it per-block, blocks on AdamW make it per_block_dt_adamw."""
    muon = [g for g in groups if g.get("use_muon")]
    if any(g.get("adamw_blocks") for g in muon):
        return "per_block_dt_adamw"
    return "per_block" if any(g.get("row_blocks") for g in muon) else "whole"


def _plain(x):
    """Coefficient tuples (possibly nested) as lists of floats, for JSON."""
    return [_plain(v) for v in x] if isinstance(x, (list, tuple)) else float(x)


def ns_plan(group: dict, device: torch.device) -> dict[str, str]:
    """Which Newton–Schulz form each matrix shape of a group runs ("plain" or "gram"); {} for cayley."""
    if group["backend"] == "cayley":
        return {}
    steps = group["ns_steps"] or default_steps(group["backend"])
    dtype = resolve_dtype(group["compute_dtype"], device)
    shapes = sorted({tuple(p.shape) for p in group["params"]})
    return {"x".join(map(str, s)): choose_method(s, steps, dtype, group["ns_method"]) for s in shapes}


def _describe_muon(g: dict, names: list[str], device: torch.device) -> dict[str, Any]:
    backend = g["backend"]
    d = dict(momentum=g["momentum"], nesterov=g["nesterov"],
             backend=backend if isinstance(backend, str) else _plain(backend),
             ns_steps=g["ns_steps"] or default_steps(backend), adjust_lr=g["adjust_lr"],
             normuon_beta2=g["beta2"], ns_method=g["ns_method"], fan_in_first=g["fan_in_first"],
             compute_dtype=describe_dtype(g["compute_dtype"], device), ns_plan=ns_plan(g, device))
    if g["row_blocks"]:
        d["row_blocks"] = {n: list(b) for n, b in zip(names, g["row_blocks"]) if b}
    if g.get("row_interleave"):
        d["row_interleave"] = {n: k for n, k in zip(names, g["row_interleave"]) if k}
    if g["adamw_blocks"]:
        d["adamw_blocks"] = {n: list(b) for n, b in zip(names, g["adamw_blocks"]) if b}
        d.update(adamw_lr_ratio=g["adamw_lr_ratio"], betas=list(g["betas"]), eps=g["eps"])
    return d


class Reporting:
    """`Muon.describe` and `Muon.compute_summary` (mixed into `Muon`)."""

    def compute_summary(self) -> str:
        """One line per Muon group: the dtype its orthogonalization runs in (and why) and the NS form per shape."""
        lines = []
        for g in self.describe()["groups"]:
            if g["use_muon"]:
                plan = g.get("ns_plan") or {}
                gram = [s for s, m in plan.items() if m == "gram"]
                form = f"Gram-space NS for {', '.join(gram)}; plain for the rest" if gram else "plain NS"
                lines.append(f"  {g['name']}: orthogonalization in {g['compute_dtype']}; {form} "
                             f"(ns_method={g['ns_method']})")
        if self.fused_blocks is not None:
            lines.append(f"  fused projections: {self.fused_blocks} ({self.fused_blocks_reason})")
        return "\n".join(lines)

    def describe(self) -> dict[str, Any]:
        """Effective settings and which parameter names are in which group, as JSON-able data."""
        groups = []
        for gi, g in enumerate(self.param_groups):
            names = param_names(g, gi)
            d: dict[str, Any] = {"name": g["name"], "use_muon": g["use_muon"], "lr": g["lr"],
                                 "weight_decay": g["weight_decay"], "decoupled_wd": g["decoupled_wd"]}
            if "initial_lr" in g:
                d["initial_lr"] = g["initial_lr"]
            device = g["params"][0].device if g["params"] else torch.device("cpu")
            if g["use_muon"]:
                d.update(_describe_muon(g, names, device))
            else:
                d.update(betas=list(g["betas"]), eps=g["eps"], adamw_8bit=self.adamw_8bit)
            d.update(num_tensors=len(g["params"]), num_parameters=sum(p.numel() for p in g["params"]),
                     param_names=names)
            groups.append(d)
        out = {"optimizer": "Muon", "nonfinite": self.nonfinite, "skipped_steps": self.skipped_steps}
        if self.fused_blocks is not None:
            out.update(fused_blocks=self.fused_blocks, fused_blocks_reason=self.fused_blocks_reason)
        return {**out, "groups": groups}
