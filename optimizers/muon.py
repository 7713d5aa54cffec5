"""`Muon`: one torch.optim.Optimizer holding Muon groups (hidden weight matrices) and AdamW groups (the rest).

One optimizer, one state_dict, groups in a fixed order: HF Trainer's optimizer.pt save/resume and its
LR scheduler (which scales ``group["lr"]`` of every group) work unchanged. The math lives in
`optimizers.functional` and `optimizers.orthogonalize`; this file holds state and bookkeeping.

Units: ``lr`` of a Muon group is the step size of the orthogonalized update, whose spectral norm is ~1,
times `update_scale` (see ``adjust_lr``); ``lr`` of an AdamW group is AdamW's usual per-element step.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import Tensor

from optimizers.distributed import DISTRIBUTED_MODES, distributed_context
from optimizers.errors import MuonConfigError
from optimizers.functional import (ADJUST_LR, adamw_, adamw_8bit_, muon_bucket_update, muon_momentum_, normuon_,
                                  update_scale)
from optimizers.newton_schulz import Workspace, choose_method
from optimizers.orthogonalize import check_method, default_steps, get_backend, orthogonalize
from optimizers.precision import describe_dtype, resolve_dtype

NONFINITE = ("raise", "skip")
ADAMW_LR_RATIO = 0.1  # adamw_lr = lr / 10 by default: 3e-3 -> 3e-4, a usual AdamW lr at ~100M params,
# and it follows lr in sweeps (modded-nanogpt also keeps a separate, smaller-unit AdamW lr)
MIN_8BIT_SIZE = 4096  # as bnb.optim.AdamW8bit: smaller tensors (norms, biases) keep fp32 moments
_EXACT_KEYS = ("exp_avg_q", "exp_avg_sq_q", "exp_avg_absmax", "exp_avg_sq_absmax", "second_moment")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise MuonConfigError(message)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_adamw_hyper(group: dict, where: str) -> None:
    """AdamW's betas and eps: of an AdamW group, or of a Muon group's AdamW-updated row blocks."""
    b1, b2 = group["betas"]
    _check(0 <= b1 < 1 and 0 <= b2 < 1, f"{where}: AdamW betas must be in [0, 1), got {group['betas']!r}")
    _check(_is_number(group["eps"]) and group["eps"] > 0, f"{where}: eps must be > 0, got {group['eps']!r}")


def _check_group(group: dict, names: list[str]) -> None:
    """Validate one param group; every message is one line naming the group and the fix."""
    where = f"param group {group['name']!r}"
    _check(_is_number(group["lr"]) and group["lr"] > 0, f"{where}: lr must be a number > 0, got {group['lr']!r}")
    _check(_is_number(group["weight_decay"]) and group["weight_decay"] >= 0,
           f"{where}: weight_decay must be >= 0, got {group['weight_decay']!r}")
    if not group["use_muon"]:
        _check_adamw_hyper(group, where)
        return
    _check_momentum(group)
    get_backend(group["backend"])  # raises with the list of valid names
    steps = group["ns_steps"]
    _check(steps is None or (isinstance(steps, int) and steps >= 1),
           f"{where}: ns_steps must be a positive integer or None, got {steps!r}")
    _check(group["adjust_lr"] in ADJUST_LR,
           f"{where}: unknown adjust_lr {group['adjust_lr']!r}; valid: {', '.join(ADJUST_LR)}")
    beta2 = group["beta2"]
    _check(beta2 is None or (_is_number(beta2) and 0 <= beta2 < 1),
           f"{where}: beta2 (NorMuon) must be in [0, 1) or None, got {beta2!r}")
    resolve_dtype(group["compute_dtype"], torch.device("cpu"))
    check_method(group["ns_method"])
    blocks = group["row_blocks"]
    if blocks is not None:
        _check(isinstance(blocks, (list, tuple)) and len(blocks) == len(group["params"]),
               f"{where}: row_blocks must be a list with one entry (None or row counts) per parameter")
        _check(group["beta2"] is None and not group["fan_in_first"],
               f"{where}: row_blocks cannot be combined with NorMuon (beta2) or fan_in_first; drop one of them")
        for p, name, sizes in zip(group["params"], names, blocks):
            _check(sizes is None or (p.ndim == 2 and all(isinstance(k, int) and k > 0 for k in sizes)
                                     and sum(sizes) == p.shape[0]),
                   f"{where}: row_blocks for {name!r} must be positive row counts summing to its {p.shape[0]} rows, "
                   f"got {sizes!r}")
    interleave = group.get("row_interleave")
    if interleave is not None:
        _check(blocks is not None and isinstance(interleave, (list, tuple)) and len(interleave) == len(group["params"]),
               f"{where}: row_interleave needs row_blocks and one entry (None or a group count) per parameter")
        for name, sizes, k, picked in zip(names, blocks, interleave, group["adamw_blocks"] or [None] * len(blocks)):
            _check(k is None or (sizes is not None and isinstance(k, int) and k >= 1
                                 and all(size % k == 0 for size in sizes)),
                   f"{where}: row_interleave for {name!r} must be a count that divides every block of {sizes!r} "
                   f"(the rows repeat the block pattern that many times), got {k!r}")
            _check(k in (None, 1) or not picked,
                   f"{where}: {name!r} has both row_interleave and adamw_blocks; interleaved blocks stay on Muon")
    adamw_blocks = group["adamw_blocks"]
    if adamw_blocks is not None:
        _check(blocks is not None and isinstance(adamw_blocks, (list, tuple))
               and len(adamw_blocks) == len(group["params"]),
               f"{where}: adamw_blocks needs row_blocks and one entry (None or block indices) per parameter")
        for name, sizes, picked in zip(names, blocks, adamw_blocks):
            _check(picked is None or (sizes is not None and all(isinstance(i, int) and 0 <= i < len(sizes)
                                                                for i in picked)),
                   f"{where}: adamw_blocks for {name!r} must be indices into its row_blocks {sizes!r}, got {picked!r}")
        _check(_is_number(group["adamw_lr_ratio"]) and group["adamw_lr_ratio"] > 0,
               f"{where}: adamw_lr_ratio (AdamW-updated rows' lr / the group's lr) must be > 0, "
               f"got {group['adamw_lr_ratio']!r}")
        _check_adamw_hyper(group, where)
    for p, name in zip(group["params"], names):
        matrix = p.ndim in (2, 3) and min(p.shape[-2:]) > 1
        _check(matrix, f"{where}: parameter {name!r} with shape {tuple(p.shape)} is not a matrix (or a stack of "
                       "matrices); Muon only takes hidden weight matrices, put it in an AdamW group (use_muon=False)")


def _plain(x):
    """Coefficient tuples (possibly nested) as lists of floats, for JSON."""
    return [_plain(v) for v in x] if isinstance(x, (list, tuple)) else float(x)


def _check_momentum(group: dict) -> None:
    m = group["momentum"]
    _check(_is_number(m) and 0 <= m < 1, f"param group {group['name']!r}: momentum must be in [0, 1), got {m!r}")


class Muon(torch.optim.Optimizer):
    """Muon (MomentUm Orthogonalized by Newton-Schulz) for hidden matrices + AdamW for everything else.

    ``params``: group dicts, each with ``use_muon`` (default True) and ``name``; optional ``param_names``
    (used in error messages and `describe`). Keyword defaults apply to groups that do not set a key.
    Muon group keys: lr, momentum, nesterov, weight_decay, decoupled_wd, backend, ns_steps, adjust_lr,
    beta2 (NorMuon; None = off), compute_dtype (None = auto: bf16 where the device has native bf16 matrix
    units, see `optimizers.precision`), ns_method ("auto" | "plain" | "gram": the Newton–Schulz form, see
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
                 adamw_8bit: bool = False, nonfinite: str = "raise", distributed: str = "auto"):
        _check(nonfinite in NONFINITE, f"unknown nonfinite={nonfinite!r}; valid: {', '.join(NONFINITE)}")
        _check(distributed in DISTRIBUTED_MODES,
               f"unknown distributed={distributed!r}; valid: {', '.join(DISTRIBUTED_MODES)}")
        if isinstance(compute_dtype, torch.dtype):  # stored as a name: state_dicts stay plain data
            compute_dtype = str(compute_dtype).replace("torch.", "")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        decoupled_wd=decoupled_wd, backend=backend, ns_steps=ns_steps, adjust_lr=adjust_lr,
                        beta2=beta2, compute_dtype=compute_dtype, betas=tuple(adamw_betas), eps=adamw_eps,
                        use_muon=True, name="muon", fan_in_first=False, ns_method=ns_method,
                        row_blocks=None, adamw_blocks=None, adamw_lr_ratio=ADAMW_LR_RATIO)
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
        _check_group(group, self._names(group, len(self.param_groups) - 1))

    @staticmethod
    def _names(group: dict, index: int) -> list[str]:
        return list(group.get("param_names") or [f"group{index}.param{i}" for i in range(len(group["params"]))])

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
        bad = [name for gi, g in enumerate(self.param_groups) for p, name in zip(g["params"], self._names(g, gi))
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
        _check_momentum(group)  # a callback may have changed it since construction
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        lr, wd = group["lr"], group["weight_decay"]
        if wd and not group["decoupled_wd"]:
            grads = torch._foreach_add(grads, params, alpha=wd)
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["beta2"] is not None:
                    state["second_moment"] = torch.zeros((*p.shape[:-1], 1), dtype=torch.float32, device=p.device)
        decay = 1 - lr * wd if wd and group["decoupled_wd"] else None  # with the unscaled lr, as torch.optim.Muon
        blocked = self._blocked(group, params)
        if blocked:
            if self._dist and self._dist.kind != "DDP":  # DDP: replicated weights and grads, so every rank
                raise MuonConfigError(                # computes the same per-block update by itself
                    f"row_blocks (per-block orthogonalization) does not run under {self._dist.kind}: a shard holds "
                    "a slice of rows, not whole blocks; use whole-matrix orthogonalization (--fused_blocks whole)")
            self._per_block_step(group, [(params[i], grads[i], sizes) for i, sizes in blocked.items()], decay)
            keep = [i for i in range(len(params)) if i not in blocked]
            params, grads = [params[i] for i in keep], [grads[i] for i in keep]
        buckets: dict[tuple, list[int]] = {}
        for i, p in enumerate(params):
            buckets.setdefault((p.shape, p.dtype, p.device), []).append(i)
        # several processes: each rank orthogonalizes its share, every rank gets every update
        shared = self._dist.bucket_updates(group, params, grads, buckets, self.state) if self._dist else None
        for key, idx in buckets.items():
            shape = key[0]
            bufs = [self.state[params[i]]["momentum_buffer"] for i in idx]
            O = shared[key] if shared is not None else muon_bucket_update(
                [grads[i] for i in idx], bufs, momentum=group["momentum"], nesterov=group["nesterov"],
                backend=group["backend"], ns_steps=group["ns_steps"], compute_dtype=group["compute_dtype"],
                method=group["ns_method"], ws=self._workspace)
            if group["beta2"] is not None:
                moments = [self.state[params[i]]["second_moment"] for i in idx]
                V = torch.stack(moments)
                O = normuon_(O.float(), V, group["beta2"])
                torch._foreach_copy_(moments, list(V.unbind(0)))
            # fan_in_first: stored (in, out), as transformers' Conv1D; the map's (out, in) shape sets the scale
            map_shape = (*shape[:-2], shape[-1], shape[-2]) if group["fan_in_first"] else shape
            alpha = -lr * update_scale(map_shape, group["adjust_lr"])
            # per tensor, decay then add, torch.optim.Muon's two ops: the tensor is still in cache for the
            # second, and adding the compute-dtype update promotes it without a separate cast pass
            for i, o in zip(idx, O.unbind(0) if isinstance(O, Tensor) else O):
                if decay is not None:
                    params[i].mul_(decay)
                params[i].add_(o, alpha=alpha)

    @staticmethod
    def _blocked(group: dict, params: list[Tensor]) -> dict[int, list[int]]:
        """{index in ``params``: row counts} for the parameters of the group that have row blocks."""
        if not group["row_blocks"]:
            return {}
        sizes = {id(p): b for p, b in zip(group["params"], group["row_blocks"]) if b}
        return {i: list(sizes[id(p)]) for i, p in enumerate(params) if id(p) in sizes}

    def _per_block_step(self, group: dict, items: list[tuple[Tensor, Tensor, list[int]]], decay) -> None:
        """Fused projections: momentum on the whole matrix, then each row block orthogonalized (one batched call
        per block shape, across parameters) and scaled by its own shape, as if it were its own parameter.
        Blocks listed in ``adamw_blocks`` take an AdamW step instead, as if they were in an AdamW group."""
        blocks: dict[tuple, list[tuple[Tensor, Tensor]]] = {}
        none = [None] * len(group["params"])
        picked = {id(p): set(b or ()) for p, b in zip(group["params"], group["adamw_blocks"] or none)}
        pieces = {id(p): k or 1 for p, k in zip(group["params"], group.get("row_interleave") or none)}
        rows = []  # (param view, grad view, state, key) of the AdamW-updated blocks
        for p, g, sizes in items:
            U = muon_momentum_([g], [self.state[p]["momentum_buffer"]], momentum=group["momentum"],
                               nesterov=group["nesterov"])[0]
            k = pieces[id(p)]  # block i = rows of its k pieces: views (k, size/k, cols); k = 1: contiguous rows
            split = [size // k for size in sizes]
            for i, (u, target, grad) in enumerate(zip(*(x.view(k, -1, x.shape[-1]).split(split, dim=1)
                                                        for x in (U, p, g)))):
                if i in picked[id(p)]:  # (never with k > 1)
                    rows.append((target[0], grad[0], self.state[p], f"rows{i}"))
                    continue
                if decay is not None:
                    target.mul_(decay)
                u = u.reshape(-1, u.shape[-1])  # the block as a matrix (a copy only when k > 1)
                blocks.setdefault((tuple(u.shape), u.dtype, u.device), []).append((u, target))
        if rows:
            self._adamw_rows_step(group, rows)
        for (shape, _, _), pairs in blocks.items():
            O = orthogonalize(torch.stack([u for u, _ in pairs]), group["backend"], group["ns_steps"],
                              group["compute_dtype"], group["ns_method"])
            alpha = -group["lr"] * update_scale(shape, group["adjust_lr"])
            for (_, target), o in zip(pairs, O.unbind(0)):
                target.add_(o.view(target.shape), alpha=alpha)

    @staticmethod
    def _adamw_rows_step(group: dict, rows: list[tuple[Tensor, Tensor, dict, str]]) -> None:
        """AdamW on row blocks of Muon matrices: moments per block in the parameter's state (``exp_avg_<key>``,
        ``exp_avg_sq_<key>``, ``step_<key>``), arithmetic exactly `adamw_`'s (that of an AdamW group)."""
        for _, grad, state, key in rows:
            if f"step_{key}" not in state:
                state[f"step_{key}"] = torch.zeros((), dtype=torch.float32, device=grad.device)
                state[f"exp_avg_{key}"] = torch.zeros_like(grad, memory_format=torch.contiguous_format)
                state[f"exp_avg_sq_{key}"] = torch.zeros_like(grad, memory_format=torch.contiguous_format)
        beta1, beta2 = group["betas"]
        wd = group["weight_decay"] if group["decoupled_wd"] else 0.0  # coupled: the grads already hold wd·p
        adamw_([t for t, *_ in rows], [g for _, g, *_ in rows], [s[f"exp_avg_{k}"] for *_, s, k in rows],
               [s[f"exp_avg_sq_{k}"] for *_, s, k in rows], [s[f"step_{k}"] for *_, s, k in rows],
               lr=group["lr"] * group["adamw_lr_ratio"], beta1=beta1, beta2=beta2, eps=group["eps"],
               weight_decay=wd, decoupled_wd=True)

    def _adamw_step(self, group: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        beta1, beta2 = group["betas"]
        hyper = dict(lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                     weight_decay=group["weight_decay"], decoupled_wd=group["decoupled_wd"])
        dense = []
        for p in params:
            state = self.state[p]
            if not state:
                self._init_adamw_state(p, state)
            if "exp_avg_q" in state:
                adamw_8bit_(p, p.grad, state, self._quant_maps(p.device), **hyper)
            else:
                dense.append(p)
        if dense:
            states = [self.state[p] for p in dense]
            adamw_(dense, [p.grad for p in dense], [s["exp_avg"] for s in states],
                        [s["exp_avg_sq"] for s in states], [s["step"] for s in states], **hyper)

    def _init_adamw_state(self, p: Tensor, state: dict) -> None:
        if self.adamw_8bit and p.numel() >= MIN_8BIT_SIZE:
            state["step"] = 0  # bitsandbytes takes a Python int
            blocks = math.ceil(p.numel() / 256)  # bitsandbytes' blockwise quantization block
            for key in ("exp_avg", "exp_avg_sq"):
                state[f"{key}_q"] = torch.zeros_like(p, dtype=torch.uint8, memory_format=torch.contiguous_format)
                state[f"{key}_absmax"] = torch.zeros(blocks, dtype=torch.float32, device=p.device)
        else:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)  # as torch's fused AdamW
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _quant_maps(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """bitsandbytes' dynamic quantization maps (signed for m, unsigned for v); rebuilt, never saved."""
        if self._qmaps is None or self._qmaps[0].device != device:
            import bitsandbytes.functional as bnbF

            self._qmaps = (bnbF.create_dynamic_map(signed=True).to(device),
                           bnbF.create_dynamic_map(signed=False).to(device))
        return self._qmaps

    # ------------------------------------------------------------ state dict

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["muon"] = {"skipped_steps": self.skipped_steps, "step_count": self.step_count}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("muon", {})
        saved = {k: dict(v) for k, v in state_dict.get("state", {}).items()}
        saved_8bit = any("exp_avg_q" in s for s in saved.values())
        saved_dense = any(s["exp_avg"].numel() >= MIN_8BIT_SIZE for s in saved.values() if "exp_avg" in s)
        _check(not (saved_8bit and not self.adamw_8bit) and not (saved_dense and self.adamw_8bit),
               f"optimizer state was saved with adamw_8bit={not self.adamw_8bit}; "
               "resume with the same adamw_8bit setting")
        # torch casts every state tensor of a float param to the param's dtype: that would turn uint8
        # moments into floats and bf16-round fp32 absmax. Load these keys ourselves, dtype untouched.
        # The same for the step counts of AdamW-updated row blocks ("step_rows<i>"): fp32, as torch keeps "step".
        exact = {i: {k: s.pop(k) for k in list(s) if k in _EXACT_KEYS or k.startswith("step_")}
                 for i, s in saved.items()}
        super().load_state_dict({**state_dict, "state": saved})
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(saved_ids, params):
            if exact.get(i):
                self.state[p].update({k: v.to(p.device) for k, v in exact[i].items()})
            step = self.state[p].get("step") if p in self.state else None
            if isinstance(step, Tensor):  # HF loads optimizer.pt to CPU; the fused kernel wants it by the param
                self.state[p]["step"] = step.to(device=p.device, dtype=torch.float32)
        self.skipped_steps = int(extra.get("skipped_steps", 0))
        self.step_count = int(extra.get("step_count", 0))
        # torch restores each group's saved settings, row blocks included: a run started under another fused mode
        # (e.g. "whole" before "auto" picked per-block for Mamba2) continues in that mode, and says so
        if self.fused_blocks is not None and fused_mode_of(self.param_groups) != self.fused_blocks:
            self.fused_blocks = fused_mode_of(self.param_groups)
            self.fused_blocks_reason = "restored with the checkpoint's parameter groups"

    # -------------------------------------------------------------- describe

    @staticmethod
    def _ns_plan(group: dict, device: torch.device) -> dict[str, str]:
        """Which Newton–Schulz form each matrix shape of a group runs ("plain" or "gram"); {} for cayley."""
        if group["backend"] == "cayley":
            return {}
        steps = group["ns_steps"] or default_steps(group["backend"])
        dtype = resolve_dtype(group["compute_dtype"], device)
        shapes = sorted({tuple(p.shape) for p in group["params"]})
        return {"x".join(map(str, s)): choose_method(s, steps, dtype, group["ns_method"]) for s in shapes}

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
            d: dict[str, Any] = {"name": g["name"], "use_muon": g["use_muon"], "lr": g["lr"],
                                 "weight_decay": g["weight_decay"], "decoupled_wd": g["decoupled_wd"]}
            if "initial_lr" in g:
                d["initial_lr"] = g["initial_lr"]
            device = g["params"][0].device if g["params"] else torch.device("cpu")
            if g["use_muon"]:
                backend = g["backend"]
                d.update(momentum=g["momentum"], nesterov=g["nesterov"],
                         backend=backend if isinstance(backend, str) else _plain(backend),
                         ns_steps=g["ns_steps"] or default_steps(backend), adjust_lr=g["adjust_lr"],
                         normuon_beta2=g["beta2"], ns_method=g["ns_method"], fan_in_first=g["fan_in_first"],
                         compute_dtype=describe_dtype(g["compute_dtype"], device),
                         ns_plan=self._ns_plan(g, device))
                if g["row_blocks"]:
                    d["row_blocks"] = {n: list(b) for n, b in zip(self._names(g, gi), g["row_blocks"]) if b}
                if g.get("row_interleave"):
                    d["row_interleave"] = {n: k for n, k in zip(self._names(g, gi), g["row_interleave"]) if k}
                if g["adamw_blocks"]:
                    d["adamw_blocks"] = {n: list(b) for n, b in zip(self._names(g, gi), g["adamw_blocks"]) if b}
                    d.update(adamw_lr_ratio=g["adamw_lr_ratio"], betas=list(g["betas"]), eps=g["eps"])
            else:
                d.update(betas=list(g["betas"]), eps=g["eps"], adamw_8bit=self.adamw_8bit)
            d.update(num_tensors=len(g["params"]), num_parameters=sum(p.numel() for p in g["params"]),
                     param_names=self._names(g, gi))
            groups.append(d)
        out = {"optimizer": "Muon", "nonfinite": self.nonfinite, "skipped_steps": self.skipped_steps}
        if self.fused_blocks is not None:
            out.update(fused_blocks=self.fused_blocks, fused_blocks_reason=self.fused_blocks_reason)
        return {**out, "groups": groups}


def fused_mode_of(groups) -> str:
    """The fused mode ("whole", "per_block", "per_block_dt_adamw") that Muon groups imply, from ``param_groups`` or
    ``describe()["groups"]``: row blocks make it per-block, blocks on AdamW make it per_block_dt_adamw."""
    muon = [g for g in groups if g.get("use_muon")]
    if any(g.get("adamw_blocks") for g in muon):
        return "per_block_dt_adamw"
    return "per_block" if any(g.get("row_blocks") for g in muon) else "whole"


def __getattr__(name: str):
    # `from optimizers.muon import create_muon_optimizer`, as the user guides write it. Lazy: factory.py
    # imports this module, so an eager import here would be circular.
    if name in ("create_muon_optimizer", "MuonFactory"):
        from optimizers import factory

        return getattr(factory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
