"""`Muon`: one torch.optim.Optimizer holding Muon groups (hidden weight matrices) and AdamW groups (the rest).

One optimizer, one state_dict, groups in a fixed order: HF Trainer's optimizer.pt save/resume and its
LR scheduler (which scales ``group["lr"]`` of every group) work unchanged. This file holds the options and the
step's bookkeeping: which matrices go into which bucket. The update math is `optimizers.functional.muon_update`;
the AdamW side is `optimizers.adamw`, the group checks `optimizers.groups`, state_dict surgery
`optimizers.checkpoint`, `describe` `optimizers.report`.

Units: ``lr`` of a Muon group is the step size of the orthogonalized update, whose spectral norm is ~1,
times `update_scale` (see ``adjust_lr``); ``lr`` of an AdamW group is AdamW's usual per-element step.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from optimizers.adamw import AdamWSide
from optimizers.checkpoint import Checkpointing
from optimizers.distributed import DISTRIBUTED_MODES, distributed_context
from optimizers.errors import MuonConfigError
from optimizers.functional import UPDATE_OPTIONS, Bucket, muon_update
from optimizers.groups import check, check_group, check_momentum, param_names
from optimizers.newton_schulz import Workspace
from optimizers.report import Reporting

NONFINITE = ("raise", "skip")
ADAMW_LR_RATIO = 0.1  # adamw_lr = lr / 10 by default: 3e-3 -> 3e-4, a usual AdamW lr at ~100M params,
# and it follows lr in sweeps (modded-nanogpt also keeps a separate, smaller-unit AdamW lr)


class Muon(AdamWSide, Checkpointing, Reporting, torch.optim.Optimizer):
    """Muon (MomentUm Orthogonalized by Newton-Schulz) for hidden matrices + AdamW for everything else.

    ``params``: group dicts, each with ``use_muon`` (default True) and ``name``; optional ``param_names``
    (used in error messages and `describe`). Keyword defaults apply to groups that do not set a key.
    Muon group keys: lr, momentum, nesterov, weight_decay, decoupled_wd, backend, ns_steps, adjust_lr,
    beta2 (NorMuon; None = off), compute_dtype (None = auto: bf16 where the device multiplies bf16 faster
    than fp32, see `optimizers.precision`), ns_method ("auto" | "plain" | "gram": the Newton–Schulz form, see
    `optimizers.newton_schulz`; "plain" with compute_dtype=bfloat16 is torch.optim.Muon's arithmetic),
    fan_in_first (weights stored (in, out), as transformers' Conv1D: the scale uses the map's shape),
    row_blocks (one entry per parameter: None, or the row counts of a fused projection's blocks — each block
    is then orthogonalized and scaled as if it were its own parameter; see `_per_block_step`), row_interleave
    (with row_blocks; one entry per parameter: None, or k when the rows repeat the block pattern k times with each
    block's rows split evenly, as GPT-NeoX's query_key_value stacks q, k, v per head: block i is then the rows of
    its k pieces, in order), adamw_blocks
    (with row_blocks; one entry per parameter: None, or the indices of blocks updated by AdamW instead — e.g.
    Mamba2 in_proj's dt rows — at lr·adamw_lr_ratio with the group's betas and eps, as if they were a parameter
    of an AdamW group).
    AdamW group keys: lr, betas, eps, weight_decay, decoupled_wd.
    ``adamw_8bit``: AdamW moments in 8 bits via bitsandbytes. ``nonfinite``: "raise" or "skip" a step whose
    gradients contain NaN/inf (skipped steps are counted in ``skipped_steps``). ``distributed``: "auto" splits
    the orthogonalization across ranks under DDP or FSDP2 (see `optimizers.distributed`); "off" does not.
    Muon takes 2-D matrices and 3-D stacks of independent matrices (e.g. MoE experts).
    """

    def __init__(self, params: Iterable, lr: float = 3e-3, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, decoupled_wd: bool = True, backend="newtonschulz5",
                 ns_steps: int | None = None, adjust_lr: str = "original", beta2: float | None = None,
                 compute_dtype=None, adamw_betas=(0.9, 0.95), adamw_eps: float = 1e-8, ns_method: str = "auto", *,
                 adamw_8bit: bool = False, nonfinite: str = "raise", distributed: str = "auto", **update_options):
        check(nonfinite in NONFINITE, f"unknown nonfinite={nonfinite!r}; valid: {', '.join(NONFINITE)}")
        check(distributed in DISTRIBUTED_MODES,
              f"unknown distributed={distributed!r}; valid: {', '.join(DISTRIBUTED_MODES)}")
        unknown = sorted(set(update_options) - set(UPDATE_OPTIONS))
        check(not unknown, f"Muon got unknown option(s) {', '.join(unknown)}; valid: the named arguments and "
                           f"{', '.join(UPDATE_OPTIONS)}")
        if isinstance(compute_dtype, torch.dtype):  # stored as a name: state_dicts stay plain data
            compute_dtype = str(compute_dtype).replace("torch.", "")
        # every group option, with its default: `muon_update` reads them from the group
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        decoupled_wd=decoupled_wd, backend=backend, ns_steps=ns_steps, adjust_lr=adjust_lr,
                        beta2=beta2, compute_dtype=compute_dtype, betas=tuple(adamw_betas), eps=adamw_eps,
                        use_muon=True, name="muon", fan_in_first=False, ns_method=ns_method,
                        row_blocks=None, adamw_blocks=None, adamw_lr_ratio=ADAMW_LR_RATIO,
                        **{name: update_options.get(name, o.default) for name, o in UPDATE_OPTIONS.items()})
        self.adamw_8bit = adamw_8bit
        self.nonfinite = nonfinite
        self.distributed = distributed
        self._dist = None  # the multi-process context, decided at the first step (the model may be sharded later)
        self._dist_checked = False
        # the fused-projection mode `create_muon_optimizer` resolved ("whole", "per_block", ...) and why; None when
        # the groups were written by hand (their row_blocks / adamw_blocks say it)
        self.fused_blocks: str | None = None
        self.fused_blocks_reason: str | None = None
        self.skipped_steps = 0  # steps skipped for non-finite gradients (saved in state_dict)
        self.step_count = 0  # step() calls, skipped ones included (saved in state_dict)
        self._qmaps: tuple[Tensor, Tensor] | None = None
        # scratch for the orthogonalization, reused across buckets and steps (never saved): the largest
        # bucket's batch, its iteration buffers and m x m matrices
        self._workspace = Workspace()
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if isinstance(group["compute_dtype"], torch.dtype):
            group["compute_dtype"] = str(group["compute_dtype"]).replace("torch.", "")
        check_group(group, self.param_names(len(self.param_groups) - 1))

    def param_names(self, index: int) -> list[str]:
        """The names of group ``index``'s parameters (its ``param_names``, else ``group<index>.param<i>``)."""
        return param_names(self.param_groups[index], index)

    # ------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.step_count += 1
        if not self._dist_checked:
            self._dist, self._dist_checked = distributed_context(self), True
        # under several processes the ranks agree on skipping, and on which parameters take part
        if not (self._dist.agree(self) if self._dist else self._grads_finite()):
            self.skipped_steps += 1
            return loss
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

    def _grads_finite(self) -> bool:
        """Fast path: one fused 2-norm per tensor and one sync (a max-abs norm is ~15x slower on CPU).
        A non-finite norm is then confirmed element-wise, since a huge but finite gradient can overflow
        the sum of squares."""
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return True
        norms = torch._foreach_norm(grads)
        if bool(torch.stack([n.float() for n in norms]).isfinite().all()):
            return True
        bad = [name for gi, g in enumerate(self.param_groups) for p, name in zip(g["params"], self.param_names(gi))
               if p.grad is not None and not bool(p.grad.isfinite().all())]
        if not bad:
            return True
        if self.nonfinite == "skip":
            return False
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise FloatingPointError(
            f"non-finite gradient (nan/inf) in parameter {bad[0]!r}{more} at optimizer step {self.step_count}; "
            "lower the learning rate, clip gradients, or build the optimizer with nonfinite='skip'")

    def _muon_step(self, group: dict) -> None:
        check_momentum(group)  # a callback may have changed it since construction
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        if group["weight_decay"] and not group["decoupled_wd"]:  # coupled (L2): wd·p joins the gradient
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["beta2"] is not None:
                    state["second_moment"] = torch.zeros((*p.shape[:-1], 1), dtype=torch.float32, device=p.device)
        blocked = self._blocked(group, params)
        if blocked:
            if self._dist and self._dist.kind != "DDP":  # DDP: replicated weights and grads, so every rank
                raise MuonConfigError(                # computes the same per-block update by itself
                    f"row_blocks (per-block orthogonalization) does not run under {self._dist.kind}: a shard holds "
                    "a slice of rows, not whole blocks; use whole-matrix orthogonalization (--fused_blocks whole)")
            self._per_block_step(group, [(params[i], grads[i], sizes) for i, sizes in blocked.items()])
            keep = [i for i in range(len(params)) if i not in blocked]
            params, grads = [params[i] for i in keep], [grads[i] for i in keep]
        buckets: dict[tuple, Bucket] = {}
        for p, g in zip(params, grads):
            state = self.state[p]
            b = buckets.setdefault((p.shape, p.dtype, p.device),
                                   Bucket([], [], [], tuple(p.shape), None if group["beta2"] is None else []))
            b.add(p, g, state["momentum_buffer"], state.get("second_moment"))
        if self._dist:  # several processes: each rank orthogonalizes its share, every rank gets every update
            route = self._dist.route(group, list(buckets.values()))
            muon_update(group, route.buckets, route=route)
        else:
            muon_update(group, list(buckets.values()), ws=self._workspace)

    @staticmethod
    def _blocked(group: dict, params: list[Tensor]) -> dict[int, list[int]]:
        """{index in ``params``: row counts} for the parameters of the group that have row blocks."""
        if not group["row_blocks"]:
            return {}
        sizes = {id(p): b for p, b in zip(group["params"], group["row_blocks"]) if b}
        return {i: list(sizes[id(p)]) for i, p in enumerate(params) if id(p) in sizes}

    def _per_block_step(self, group: dict, items: list[tuple[Tensor, Tensor, list[int]]]) -> None:
        """Fused projections: each row block updated as if it were its own parameter — `muon_update` over row views
        of the parameter, gradient and momentum, bucketed by block shape across parameters (so scaled by the
        block's shape). Blocks listed in ``adamw_blocks`` take an AdamW step instead, as if in an AdamW group."""
        buckets: dict[tuple, Bucket] = {}
        none = [None] * len(group["params"])
        picked = {id(p): set(b or ()) for p, b in zip(group["params"], group["adamw_blocks"] or none)}
        pieces = {id(p): k or 1 for p, k in zip(group["params"], group.get("row_interleave") or none)}
        rows = []  # (param view, grad view, state, key) of the AdamW-updated blocks
        for p, g, sizes in items:
            k = pieces[id(p)]  # block i = rows of its k pieces: views (k, size/k, cols); k = 1: contiguous rows
            split = [size // k for size in sizes]
            views = (x.view(k, -1, x.shape[-1]).split(split, dim=1) for x in (p, g, self.state[p]["momentum_buffer"]))
            for i, (target, grad, buf) in enumerate(zip(*views)):
                if i in picked[id(p)]:  # (never with k > 1)
                    rows.append((target[0], grad[0], self.state[p], f"rows{i}"))
                    continue
                if k == 1:
                    target, grad, buf = target[0], grad[0], buf[0]
                shape = (k * split[i], p.shape[-1])  # the block as a matrix
                buckets.setdefault((shape, g.dtype, g.device), Bucket([], [], [], shape)).add(target, grad, buf)
        if rows:
            self._adamw_rows_step(group, rows)
        muon_update(group, list(buckets.values()), ws=self._workspace)
