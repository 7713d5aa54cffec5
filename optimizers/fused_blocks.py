"""Row blocks of fused projections, read from the model's config: which rows of one weight play which role.

    from optimizers.fused_blocks import fused_row_blocks
    fused_row_blocks(model)  # {"backbone.layers.0.mixer.in_proj.weight": [("z", 384), ("x", 384), ("B", 64), ...]}

A fused ``nn.Linear`` stacks several projections along its output rows; ``weight[rows]`` of each block is what a
separate ``nn.Linear`` of that role would hold. Blocks are listed in row order and their sizes sum to the weight's
rows (checked: a mismatch means this file no longer matches the installed transformers and raises).

Covered, from transformers' modeling code (checked against transformers 5.x):
- Mamba2 / Zamba2 / Bamba / FalconH1 mixers' ``in_proj``: the forward splits its output as
  ``[intermediate_size, conv_dim, num_heads]`` = z (gate of the gated RMSNorm), xBC (through conv1d), dt; then xBC
  as ``[intermediate_size, n_groups*state_size, n_groups*state_size]`` = x, B, C. So the rows are
  z, x, B, C, dt with sizes I, I, G*N, G*N, H. (FalconH1 also scales these by its ``mup_vector`` after the matmul,
  per block; the row layout is the same.)
- Zamba2's shared MLP ``gate_up_proj`` (and the second matrix of each of its low-rank ``gate_up_proj`` adapters,
  whose output is added to it): ``torch.chunk(.., 2)`` = gate, up, each ``config.intermediate_size`` rows.
Left out: GPT-NeoX's ``query_key_value``. Its output is viewed as (heads, 3*head_dim) before ``chunk(3)``, so the
rows interleave per head (q_0, k_0, v_0, q_1, ...): the q rows are not one contiguous block, and a contiguous-block
description would be wrong. It needs a row permutation (or per-head blocks) that the caller would have to honour;
none of this project's models use it. Fused biases are not listed: they are vectors, never orthogonalized.
"""

from __future__ import annotations

import torch

from optimizers.errors import MuonConfigError


def _ssm_sizes(config, *, heads: str, expand: str, groups: str, state: str, d_ssm: str | None = None) -> dict:
    intermediate = getattr(config, d_ssm, None) if d_ssm else None
    if intermediate is None:
        intermediate = int(getattr(config, expand) * config.hidden_size)
    return {"intermediate": int(intermediate), "heads": int(getattr(config, heads)),
            "bc": int(getattr(config, groups)) * int(getattr(config, state))}


#: mixer class name -> how its config names the sizes (each mixer's __init__ reads exactly these fields)
_MIXERS = {
    "Mamba2Mixer": dict(heads="num_heads", expand="expand", groups="n_groups", state="state_size"),
    "Zamba2MambaMixer": dict(heads="n_mamba_heads", expand="mamba_expand", groups="mamba_ngroups",
                             state="mamba_d_state"),
    "BambaMixer": dict(heads="mamba_n_heads", expand="mamba_expand", groups="mamba_n_groups", state="mamba_d_state"),
    "FalconH1Mixer": dict(heads="mamba_n_heads", expand="mamba_expand", groups="mamba_n_groups", state="mamba_d_state",
                          d_ssm="mamba_d_ssm"),
}


def in_proj_blocks(config, mixer_class: str) -> list[tuple[str, int]]:
    """Row blocks z, x, B, C, dt of a Mamba2-style mixer's ``in_proj`` from ``config``."""
    s = _ssm_sizes(config, **_MIXERS[mixer_class])
    return [("z", s["intermediate"]), ("x", s["intermediate"]), ("B", s["bc"]), ("C", s["bc"]), ("dt", s["heads"])]


def gate_up_blocks(config) -> list[tuple[str, int]]:
    """Row blocks of Zamba2's fused ``gate_up_proj`` (``chunk(2)``: gate first)."""
    return [("gate", int(config.intermediate_size)), ("up", int(config.intermediate_size))]


def fused_row_blocks(model) -> dict[str, list[tuple[str, int]]]:
    """{parameter name: [(block name, rows), ...] in row order} for every fused projection weight of ``model``.

    Names are those of ``model.named_parameters()`` (a weight shared across depth, like Zamba2's shared block,
    appears once, under its first name). Models without fused projections give an empty dict.
    """
    config = model.config
    found: dict[str, list[tuple[str, int]]] = {}
    for module_name, module in model.named_modules():
        cls = type(module).__name__
        prefix = f"{module_name}." if module_name else ""
        if cls in _MIXERS:
            found[f"{prefix}in_proj.weight"] = in_proj_blocks(config, cls)
        elif cls == "Zamba2MLP":
            blocks = gate_up_blocks(config)
            found[f"{prefix}gate_up_proj.weight"] = blocks
            for i, adapter in enumerate(getattr(module, "gate_up_proj_adapter_list", ())):
                if isinstance(adapter, torch.nn.Sequential):  # nn.Identity where another shared block is used
                    found[f"{prefix}gate_up_proj_adapter_list.{i}.1.weight"] = blocks
    params = dict(model.named_parameters())
    for name, blocks in list(found.items()):
        if name not in params:  # a shared module reached twice keeps the name named_parameters() uses
            del found[name]
            continue
        rows, total = params[name].shape[0], sum(size for _, size in blocks)
        if rows != total:
            raise MuonConfigError(f"{name}: the config gives row blocks {blocks} summing to {total}, but the weight "
                                  f"has {rows} rows; optimizers/fused_blocks.py does not match this transformers "
                                  "version, update it")
    return found
