"""`Muon`'s state_dict surgery (mixed into `Muon`): its step counters travel under ``"muon"``, and the state
tensors whose dtype torch would change on load (8-bit moments, fp32 absmax, NorMuon moments, the step counts of
AdamW-updated row blocks) are loaded as saved."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimizers.adamw import MIN_8BIT_SIZE
from optimizers.groups import check
from optimizers.report import fused_mode_of

_EXACT_KEYS = ("exp_avg_q", "exp_avg_sq_q", "exp_avg_absmax", "exp_avg_sq_absmax", "second_moment")


class Checkpointing:
    """`Muon.state_dict` and `Muon.load_state_dict`."""

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
        check(not (saved_8bit and not self.adamw_8bit) and not (saved_dense and self.adamw_8bit),
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
