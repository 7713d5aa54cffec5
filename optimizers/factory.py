"""`create_muon_optimizer`: split a model's parameters and build one `Muon` over them; `MuonFactory`: the same
for ``transformers.Trainer(optimizer_cls_and_kwargs=(MuonFactory, kwargs))``, which calls
``MuonFactory()(model, **kwargs)`` with the model it will step (FSDP-wrapped where it is).

    trainer = Trainer(model, args, optimizer_cls_and_kwargs=(MuonFactory, {"lr": 3e-3}), ...)
"""

from __future__ import annotations

from torch import nn

from optimizers.errors import MuonConfigError
from optimizers.fused_blocks import fused_row_blocks, fused_row_interleave
from optimizers.optimizer import ADAMW_LR_RATIO, Muon
from optimizers.param_split import split_parameters

#: What ``mamba-train --optimizer`` builds: Muon here (`create_muon_optimizer`), or AdamW on every parameter
#: (torch's, or bitsandbytes' 8-bit one) with the same no-decay split.
OPTIMIZER_TYPES = ("muon", "adamw", "adamw_8bit")
FUSED_MODES = ("auto", "whole", "per_block", "per_block_dt_adamw")
ADAMW_BLOCKS = {"per_block_dt_adamw": ("dt",)}  # fused mode -> row blocks updated by AdamW instead of Muon
#: What ``fused="auto"`` picks, by ``model.config.model_type``; every other model gets "whole" (reference Muon).
#: Measured with bench/convergence.py (docs/benchmarks.md, "Per-block orthogonalization"): on pure Mamba2,
#: per_block_dt_adamw beat whole on every seed by more than the seed spread; on the Zamba2 hybrid it lost on every
#: seed, so zamba2 keeps "whole". Families not measured (Bamba, FalconH1) keep the reference behaviour.
FUSED_AUTO = {"mamba2": "per_block_dt_adamw"}


def auto_fused_mode(model_type: str | None, *, normuon: bool = False) -> str:
    """The fused mode ``"auto"`` resolves to for a model family (``config.model_type``) on one process (FSDP2
    shards always get "whole"); with NorMuon (``normuon``) it is "whole" too, see `resolve_fused`."""
    return "whole" if normuon else FUSED_AUTO.get(model_type, "whole")


def resolve_fused(model: nn.Module, fused: str, *, normuon: bool = False) -> tuple[str, str]:
    """(mode, why) for ``fused`` on ``model``: "auto" becomes a concrete mode by model family. Per-block modes are
    refused on FSDP2-sharded parameters (a shard holds a slice of rows, not whole blocks) and with NorMuon
    (``normuon``: its per-row normalization is of whole matrices); "auto" gives "whole" there."""
    if fused not in FUSED_MODES:
        raise MuonConfigError(f"unknown fused={fused!r}; valid: {', '.join(FUSED_MODES)}")
    sharded = any(hasattr(p, "device_mesh") and hasattr(p, "placements") for p in model.parameters())
    if fused != "auto":
        if sharded and fused != "whole":
            raise MuonConfigError(f"fused={fused!r} (per-block orthogonalization) does not run on FSDP2-sharded "
                                  "parameters; use fused='whole' (--fused_blocks whole) under FSDP2")
        if normuon and fused != "whole":
            raise MuonConfigError(f"fused={fused!r} (per-block orthogonalization) cannot be combined with NorMuon "
                                  "(beta2 / --muon_beta2); use fused='whole' (--fused_blocks whole) or drop beta2")
        return fused, "as given"
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    mode = auto_fused_mode(model_type)
    if sharded and mode != "whole":
        return "whole", f"auto: {model_type} would get {mode}, but FSDP2 shards rows across ranks"
    if normuon and mode != "whole":
        return "whole", f"auto: {model_type} would get {mode}, but NorMuon (beta2) normalizes whole matrices"
    return mode, f"auto: {model_type or type(model).__name__}"


def create_muon_optimizer(model: nn.Module, lr: float = 3e-3, momentum: float = 0.95, weight_decay: float = 0.01,
                          nesterov: bool = True, backend="newtonschulz5", decoupled_wd: bool = True, *,
                          ns_steps: int | None = None, adjust_lr: str = "original", adamw_lr: float | None = None,
                          adamw_betas=(0.9, 0.95), adamw_eps: float = 1e-8, adamw_weight_decay: float | None = None,
                          beta2: float | None = None, adamw_8bit: bool = False, nonfinite: str = "raise",
                          include=(), exclude=(), verbose: bool = True, distributed: str = "auto",
                          compute_dtype=None, ns_method: str = "auto", fused: str = "auto", **update_options) -> Muon:
    """One `Muon` with groups in this order: "muon", ["muon_no_decay"], "adamw_decay", "adamw_no_decay".

    ``adamw_lr`` defaults to ``lr / 10``; ``adamw_weight_decay`` to ``weight_decay``. Groups named
    *_no_decay get weight_decay 0. ``verbose`` prints the split summary. ``distributed``: "auto" splits the
    orthogonalization across DDP/FSDP2 ranks, "off" does not (see `optimizers.distributed`).
    ``compute_dtype`` (None = auto: bf16 where the device multiplies bf16 faster than fp32) and ``ns_method``
    ("auto" | "plain" | "gram") choose how Newton–Schulz runs (`optimizers.precision`, `optimizers.newton_schulz`).
    ``fused``: "whole" orthogonalizes fused projections (Mamba2 in_proj, Zamba2 gate_up_proj) as one matrix;
    "per_block" orthogonalizes and scales each row block (z, x, B, C, dt / gate, up) as if it were its own
    parameter (blocks read from the model's config by `optimizers.fused_blocks`); "per_block_dt_adamw" does the
    same but gives in_proj's dt rows (a few per head, feeding a softplus) an AdamW update at ``adamw_lr``, as
    the SSM's other per-head parameters (dt_bias, A_log) get. "auto" (the default) picks by model family
    (`FUSED_AUTO`: per_block_dt_adamw for Mamba2, whole otherwise); the optimizer's ``fused_blocks`` attribute
    (and ``describe()``) holds the mode used. ``update_options``: the update's own options by name
    (`optimizers.functional.UPDATE_OPTIONS`, e.g. ``cautious_wd=True``), for the Muon groups.
    """
    fused, why = resolve_fused(model, fused, normuon=beta2 is not None)
    split = split_parameters(model, include=include, exclude=exclude)
    if not any(g.use_muon for g in split.groups):
        raise MuonConfigError(f"{type(model).__name__}: the split gives Muon no weight matrix (no nn.Linear/Conv1D "
                              "hidden weight found), so this would train pure AdamW; name its matrices with "
                              "include=['<glob>'] (--muon_include), or use --optimizer adamw")
    blocks = fused_row_blocks(model) if fused != "whole" else {}
    interleave = fused_row_interleave(model) if blocks else {}
    to_adamw = ADAMW_BLOCKS.get(fused, ())
    adamw_lr = lr * ADAMW_LR_RATIO if adamw_lr is None else adamw_lr
    adamw_wd = weight_decay if adamw_weight_decay is None else adamw_weight_decay
    groups = []
    for g in split.groups:
        group = dict(params=g.params, param_names=g.param_names, name=g.name, use_muon=g.use_muon,
                     decoupled_wd=decoupled_wd)
        if g.use_muon:
            group.update(lr=lr, weight_decay=weight_decay if g.decay else 0.0, momentum=momentum,
                         nesterov=nesterov, backend=backend, ns_steps=ns_steps, adjust_lr=adjust_lr, beta2=beta2,
                         compute_dtype=compute_dtype, ns_method=ns_method, fan_in_first=g.fan_in_first)
            if blocks and not g.fan_in_first:
                sizes = [[k for _, k in blocks[n]] if n in blocks else None for n in g.param_names]
                group["row_blocks"] = sizes if any(sizes) else None
                pieces = [interleave.get(n) for n in g.param_names]
                group["row_interleave"] = pieces if any(pieces) else None
                picked = [[i for i, (b, _) in enumerate(blocks[n]) if b in to_adamw] or None if n in blocks
                          else None for n in g.param_names]
                if any(picked):
                    group.update(adamw_blocks=picked, adamw_lr_ratio=adamw_lr / lr, betas=tuple(adamw_betas),
                                 eps=adamw_eps)
        else:
            group.update(lr=adamw_lr, weight_decay=adamw_wd if g.decay else 0.0, betas=tuple(adamw_betas),
                         eps=adamw_eps)
        groups.append(group)
    optimizer = Muon(groups, lr=lr, adamw_8bit=adamw_8bit, nonfinite=nonfinite, distributed=distributed,
                     **update_options)
    optimizer.fused_blocks, optimizer.fused_blocks_reason = fused, why
    if verbose:
        print(split.summary())
        print(optimizer.compute_summary())
    return optimizer


class MuonFactory:
    """An optimizer factory for ``Trainer(optimizer_cls_and_kwargs=(MuonFactory, kwargs))``.

    transformers (`is_optimizer_factory`) calls ``MuonFactory()(model, **kwargs)`` inside
    ``Trainer.create_optimizer``, after accelerate has wrapped the model, so the split sees what is stepped.
    ``kwargs`` are `create_muon_optimizer`'s (same validation); the Trainer's LR scheduler then scales every
    group's lr. For the momentum warm-up add ``MomentumScheduleCallback`` (it reads the global step: resumable).
    """

    def __call__(self, model: nn.Module, **kwargs) -> Muon:
        return create_muon_optimizer(model, **kwargs)
