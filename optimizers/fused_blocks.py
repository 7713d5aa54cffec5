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
- GPT-NeoX's ``query_key_value`` (``GPTNeoXAttention``): its output is viewed as (heads, 3*head_dim) before
  ``chunk(3)``, so the rows interleave per head (q_0, k_0, v_0, q_1, ...). Its blocks are q, k, v (hidden_size rows
  each) with ``fused_row_interleave`` = num_attention_heads: the rows repeat the q/k/v pattern once per head, and
  block q is the q rows of every head, in head order (the rows a separate q projection would hold).
Fused biases are not listed: they are vectors, never orthogonalized.
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


def qkv_blocks(config) -> tuple[list[tuple[str, int]], int]:
    """GPT-NeoX's ``query_key_value``: blocks q, k, v and the number of per-head repeats of that pattern."""
    heads = int(config.num_attention_heads)
    return [(name, int(config.hidden_size)) for name in ("q", "k", "v")], heads


def fused_row_interleave(model) -> dict[str, int]:
    """{parameter name: k} for the fused projections of ``model`` whose rows repeat their block pattern k times
    (GPT-NeoX's query_key_value: once per head); the others are contiguous blocks and are not listed."""
    return {name: k for name, (_, k) in _fused(model).items() if k > 1}


def fused_row_blocks(model) -> dict[str, list[tuple[str, int]]]:
    """{parameter name: [(block name, rows), ...] in row order} for every fused projection weight of ``model``
    (rows interleaved where `fused_row_interleave` says so).

    Names are those of ``model.named_parameters()`` (a weight shared across depth, like Zamba2's shared block,
    appears once, under its first name). Models without fused projections give an empty dict.
    """
    return {name: blocks for name, (blocks, _) in _fused(model).items()}


def _fused(model) -> dict[str, tuple[list[tuple[str, int]], int]]:
    config = model.config
    found: dict[str, tuple[list[tuple[str, int]], int]] = {}
    for module_name, module in model.named_modules():
        cls = type(module).__name__
        prefix = f"{module_name}." if module_name else ""
        if cls in _MIXERS:
            found[f"{prefix}in_proj.weight"] = in_proj_blocks(config, cls), 1
        elif cls == "Zamba2MLP":
            blocks = gate_up_blocks(config)
            found[f"{prefix}gate_up_proj.weight"] = blocks, 1
            for i, adapter in enumerate(getattr(module, "gate_up_proj_adapter_list", ())):
                if isinstance(adapter, torch.nn.Sequential):  # nn.Identity where another shared block is used
                    found[f"{prefix}gate_up_proj_adapter_list.{i}.1.weight"] = blocks, 1
        elif cls == "GPTNeoXAttention":
            found[f"{prefix}query_key_value.weight"] = qkv_blocks(config)
    params = dict(model.named_parameters())
    for name, (blocks, _) in list(found.items()):
        if name not in params:  # a shared module reached twice keeps the name named_parameters() uses
            del found[name]
            continue
        rows, total = params[name].shape[0], sum(size for _, size in blocks)
        if rows != total:
            raise MuonConfigError(f"{name}: the config gives row blocks {blocks} summing to {total}, but the weight "
                                  f"has {rows} rows; optimizers/fused_blocks.py does not match this transformers "
                                  "version, update it")
    return found
