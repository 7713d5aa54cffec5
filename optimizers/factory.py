"""`create_muon_optimizer`: split a model's parameters and build one `Muon` over them."""

from __future__ import annotations

from torch import nn

from optimizers.muon import Muon
from optimizers.param_split import split_parameters

ADAMW_LR_RATIO = 0.1  # adamw_lr = lr / 10 by default: 3e-3 -> 3e-4, a usual AdamW lr at ~100M params,
# and it follows lr in sweeps (modded-nanogpt also keeps a separate, smaller-unit AdamW lr)


def create_muon_optimizer(model: nn.Module, lr: float = 3e-3, momentum: float = 0.95, weight_decay: float = 0.01,
                          nesterov: bool = True, backend="newtonschulz5", decoupled_wd: bool = True, *,
                          ns_steps: int | None = None, adjust_lr: str = "original", adamw_lr: float | None = None,
                          adamw_betas=(0.9, 0.95), adamw_eps: float = 1e-8, adamw_weight_decay: float | None = None,
                          beta2: float | None = None, adamw_8bit: bool = False, nonfinite: str = "raise",
                          include=(), exclude=(), verbose: bool = True, distributed: str = "auto",
                          compute_dtype=None, ns_method: str = "auto") -> Muon:
    """One `Muon` with groups in this order: "muon", ["muon_no_decay"], "adamw_decay", "adamw_no_decay".

    ``adamw_lr`` defaults to ``lr / 10``; ``adamw_weight_decay`` to ``weight_decay``. Groups named
    *_no_decay get weight_decay 0. ``verbose`` prints the split summary. ``distributed``: "auto" splits the
    orthogonalization across DDP/FSDP2 ranks, "off" does not (see `optimizers.distributed`).
    ``compute_dtype`` (None = auto: bf16 where the device has native bf16 matrix units) and ``ns_method``
    ("auto" | "plain" | "gram") choose how Newton–Schulz runs (`optimizers.precision`, `optimizers.newton_schulz`).
    """
    split = split_parameters(model, include=include, exclude=exclude)
    adamw_lr = lr * ADAMW_LR_RATIO if adamw_lr is None else adamw_lr
    adamw_wd = weight_decay if adamw_weight_decay is None else adamw_weight_decay
    groups = []
    for g in split.groups:
        group = dict(params=g.params, param_names=g.param_names, name=g.name, use_muon=g.use_muon,
                     decoupled_wd=decoupled_wd)
        if g.use_muon:
            group.update(lr=lr, weight_decay=weight_decay if g.decay else 0.0, momentum=momentum,
                         nesterov=nesterov, backend=backend, ns_steps=ns_steps, adjust_lr=adjust_lr, beta2=beta2,
                         compute_dtype=compute_dtype, ns_method=ns_method)
        else:
            group.update(lr=adamw_lr, weight_decay=adamw_wd if g.decay else 0.0, betas=tuple(adamw_betas),
                         eps=adamw_eps)
        groups.append(group)
    optimizer = Muon(groups, lr=lr, adamw_8bit=adamw_8bit, nonfinite=nonfinite, distributed=distributed)
    if verbose:
        print(split.summary())
        print(optimizer.compute_summary())
    return optimizer
