"""The AdamW side of `Muon`: the AdamW kernels (pure functions over lists of tensors) and the state handling of
AdamW groups and of a Muon group's AdamW-updated row blocks (`AdamWSide`, mixed into `Muon`).

Kernels: torch's fused AdamW kernel (= ``torch.optim.AdamW(fused=True)``) for large tensors, foreach ops for
small ones, or bitsandbytes' blockwise 8-bit kernel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

FUSED_MIN_NUMEL = 32768  # torch's parallel grain size: smaller tensors never use more than one thread anyway
MIN_8BIT_SIZE = 4096  # as bnb.optim.AdamW8bit: smaller tensors (norms, biases) keep fp32 moments


def adamw_(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
           steps: list[Tensor], *, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
           decoupled_wd: bool) -> None:
    """AdamW (bias-corrected, decoupled wd) or, with ``decoupled_wd=False``, Adam with L2 (wd·p added to
    the gradient). ``steps`` are 0-dim float32 tensors on the params' device, incremented here.

    Large tensors go through torch's fused kernel, exactly ``torch.optim.AdamW(fused=True)``: one memory
    pass instead of ~8. Small CPU tensors (norms, biases, SSM vectors) go through `_adamw_foreach`, exactly
    the default single-tensor ``torch.optim.AdamW``: the fused CPU kernel opens one thread-parallel region
    per tensor, and on a busy CPU each region can wait milliseconds for its threads (measured 1.4 s for
    178 norm/bias tensors on the shared 2-core dev box, vs 0.05 s this way).
    """
    small = [i for i, p in enumerate(params) if p.device.type == "cpu" and p.numel() < FUSED_MIN_NUMEL]
    large = sorted(set(range(len(params))) - set(small))
    hyper = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, decoupled_wd=decoupled_wd)
    for fn, idx in ((_adamw_fused, large), (_adamw_foreach, small)):
        if idx:
            fn(*([xs[i] for i in idx] for xs in (params, grads, exp_avgs, exp_avg_sqs, steps)), **hyper)


def _adamw_fused(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay,
                 decoupled_wd) -> None:
    fused = torch._fused_adamw_ if decoupled_wd else torch._fused_adam_
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault((p.device, p.dtype), []).append(i)
    for idx in groups.values():
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        torch._foreach_add_(pick(steps), 1)
        fused(pick(params), pick(grads), pick(exp_avgs), pick(exp_avg_sqs), [], pick(steps), amsgrad=False,
              lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay, eps=eps, maximize=False)


def _adamw_foreach(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay,
                   decoupled_wd) -> None:
    """torch.optim.AdamW's single-tensor arithmetic op for op, as foreach calls."""
    for s in steps:
        s += 1
    if weight_decay:
        if decoupled_wd:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        else:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    # Python-float bias corrections, exactly as the single-tensor path computes them
    values = [s.item() for s in steps]
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denoms, [(1 - beta2**v) ** 0.5 for v in values])
    torch._foreach_add_(denoms, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denoms, [-(lr / (1 - beta1**v)) for v in values])


def adamw_8bit_(param: Tensor, grad: Tensor, state: dict, qmaps: tuple[Tensor, Tensor], *, lr: float,
                beta1: float, beta2: float, eps: float, weight_decay: float, decoupled_wd: bool) -> None:
    """One AdamW step with blockwise 8-bit moments through bitsandbytes' fused kernel (CPU and CUDA).

    ``state`` holds uint8 ``exp_avg_q``/``exp_avg_sq_q`` and their fp32 per-256-block ``absmax``; the
    kernel dequantizes, applies AdamW (decoupled wd) and requantizes — the same call bnb.optim.AdamW8bit
    makes, so results match it.
    """
    import bitsandbytes.functional as bnbF

    if weight_decay and not decoupled_wd:
        grad = grad.add(param, alpha=weight_decay)
    state["step"] += 1
    bnbF.optimizer_update_8bit_blockwise(
        "adam", grad.contiguous(), param, state["exp_avg_q"], state["exp_avg_sq_q"], beta1, beta2, 0.0, 0.0,
        eps, state["step"], lr, qmaps[0], qmaps[1], state["exp_avg_absmax"], state["exp_avg_sq_absmax"],
        weight_decay if decoupled_wd else 0.0, gnorm_scale=1.0, skip_zeros=False)


class AdamWSide:
    """`Muon`'s AdamW groups and AdamW-updated row blocks: state creation (fp32 or 8-bit moments) and the step.
    Expects ``self.state`` (torch.optim.Optimizer's), ``self.adamw_8bit`` and ``self._qmaps``."""

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
