"""Packed rows that keep their examples apart, on transformers' own Mamba2 and Zamba2 models.

    from mamba_trainer.packed import enable_packed_boundaries
    model = enable_packed_boundaries(model)     # build_model and load_pretrained already do this
    model(input_ids=ids, labels=labels, position_ids=pos)   # pos restarts at 0 at each example

A row may hold several examples, each starting where its ``position_ids`` is 0 (as ``DataCollatorWithFlattening``
writes them). The model then treats each example as if it were alone: the Mamba2 conv1d does not reach across a
boundary, the SSM state starts from zero at each example's first token, and the shared attention of Zamba2 is
causal within each example (transformers' ``create_causal_mask`` builds that block-causal mask from packed
``position_ids``; RoPE positions restart with them).

It is a small layer over transformers' classes, applied to a model *instance* (nothing is saved with the
checkpoint, which stays an ordinary transformers checkpoint):

* the model's ``forward`` accepts ``position_ids`` (Mamba2's own does not use them). When no row has a boundary
  (every row's ``position_ids`` is 0..L-1 or an offset run, or they are absent), or a cache is in use
  (``generate()``), it calls transformers' own forward unchanged: bit-identical outputs (a test checks it);
* otherwise it derives ``seq_idx`` (per row: 0 for the first example, 1 for the next, ...) and hands it to every
  Mamba2 mixer, which then runs the boundary-aware path below instead of its own forward. Everything else (norms,
  projections, the gated RMSNorm, D skip, dt bias/softplus/clamp, the attention blocks, the LM head and loss) is
  transformers' code.

The boundary-aware mixer: on CPU (or CUDA without the kernels) a PyTorch chunked SSD scan masked by ``seq_idx``
exactly as mamba-ssm's kernels mask it (within a chunk only same-example pairs interact; a chunk's state holds only
positions of the example at the chunk's end; the state passed into a chunk is dropped when the example changed;
a position reads the incoming state only when it belongs to that state's example); on CUDA with mamba-ssm and
causal-conv1d, their kernels with ``seq_idx``.

Padding inside a packed row must be its own "example" (``position_ids`` restarting at 0, labels -100), not an
``attention_mask`` with zeros: Zamba2's attention then needs no padding mask (an ``attention_mask`` of zeros in a
row with boundaries is refused for Zamba2).
"""

from __future__ import annotations

import functools
import inspect
import logging
import types

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

#: The transformers versions the boundary layer is tested with (tests/test_packed.py). Outside it, a one-line warning.
TESTED_TRANSFORMERS = (">=5.17", "<5.26")

_SEQ_IDX = "packed_seq_idx"  # the keyword that carries seq_idx from the model down to its mixers
_PENDING = "_packed_seq_idx_pending"  # one-shot slot: the top-level forward hands seq_idx to the base model
_FLAG = "_packed_boundaries_enabled"
_warned_version = False


# ---- version -------------------------------------------------------------------------------------------------
def transformers_in_tested_range(version: str | None = None) -> bool:
    """Whether ``version`` (default: the installed transformers) is inside ``TESTED_TRANSFORMERS``."""
    from packaging.specifiers import SpecifierSet

    if version is None:
        import transformers
        version = transformers.__version__
    return SpecifierSet(",".join(TESTED_TRANSFORMERS)).contains(version, prereleases=True)


def _check_version() -> None:
    global _warned_version
    if _warned_version or transformers_in_tested_range():
        return
    import transformers
    _warned_version = True
    logger.warning("packed-example boundaries are tested with transformers %s, this is %s: check "
                   "tests/test_packed.py passes", ",".join(TESTED_TRANSFORMERS), transformers.__version__)


# ---- boundaries ----------------------------------------------------------------------------------------------
def seq_idx_from_position_ids(position_ids: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Per row, which example each token belongs to (int32): an example starts at index 0 and wherever
    ``position_ids`` is 0. ``[[0, 1, 2, 0, 1, 0]] -> [[0, 0, 0, 1, 1, 2]]``."""
    if position_ids.dim() == 1:
        position_ids = position_ids[None]
    if batch_size is not None and position_ids.shape[0] != batch_size:
        position_ids = position_ids.expand(batch_size, -1)
    starts = position_ids == 0
    starts[:, 0] = True
    return starts.cumsum(-1, dtype=torch.int32) - 1


def _find_boundaries(position_ids: torch.Tensor, batch_size: int, attention_mask: torch.Tensor | None,
                     consecutive: bool):
    """(seq_idx, or None when no row holds a second example; whether ``attention_mask`` is all ones). A boundary
    is a 0 in ``position_ids`` at a real token (``attention_mask`` 1) that is not its row's first real token, so a
    left-padded batch is no packed one. ``consecutive``: raise unless positions count up by 1 within an example
    (what transformers' block-causal attention mask assumes). One host sync."""
    pos = position_ids[None] if position_ids.dim() == 1 else position_ids
    if pos.shape[0] != batch_size:
        pos = pos.expand(batch_size, -1)
    starts = pos == 0
    flags = []
    if attention_mask is None:
        flags.append(starts[:, 1:].any())
    else:
        real = attention_mask.bool()
        first_real = real & (real.cumsum(-1) == 1)
        flags.append((starts & real & ~first_real).any())
        flags.append(real.all())
    if consecutive:
        flags.append((~starts[:, 1:] & (pos[:, 1:] != pos[:, :-1] + 1)).any())
    flags = torch.stack(flags).tolist()
    if not flags[0]:
        return None, True
    if consecutive and flags[-1]:
        raise ValueError("packed position_ids must count 0, 1, 2, ... within each example (a new example starts "
                         "at 0); got a jump that is not a restart at 0")
    return seq_idx_from_position_ids(pos), attention_mask is None or flags[1]


def _uses_cache(kwargs: dict) -> bool:
    return bool(kwargs.get("use_cache")) or any(kwargs.get(k) is not None
                                                for k in ("cache", "cache_params", "past_key_values"))


# ---- the wrapped forwards ------------------------------------------------------------------------------------
@functools.cache
def _model_signature(cls) -> inspect.Signature:
    """``cls.forward``'s signature with a keyword ``position_ids`` (Trainer keeps only the dataset columns that
    forward names, and Mamba2's forward names none)."""
    signature = inspect.signature(cls.forward)
    if "position_ids" in signature.parameters:
        return signature
    params = list(signature.parameters.values())
    at = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD), len(params))
    params.insert(at, inspect.Parameter("position_ids", inspect.Parameter.KEYWORD_ONLY, default=None))
    return signature.replace(parameters=params)


def _as_keywords(self, args: tuple, kwargs: dict) -> dict:
    """All arguments by name (forward may get attention_mask or position_ids positionally)."""
    bound = _model_signature(type(self)).bind(self, *args, **kwargs).arguments
    bound.pop("self", None)
    for name, param in _model_signature(type(self)).parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            bound.update(bound.pop(name, {}))
    return bound


def _model_forward(self, *args, **kwargs):
    """The model's forward: transformers' own, unchanged, unless some row holds several examples."""
    cls_forward = type(self).forward
    if len(args) > 1:
        args, kwargs = (), _as_keywords(self, args, kwargs)
    kwargs.pop("seq_idx", None)  # a collator's own seq_idx: ours comes from position_ids
    mamba2 = self.config.model_type == "mamba2"  # Mamba2's own forward has no use for position_ids
    position_ids = kwargs.pop("position_ids", None) if mamba2 else kwargs.get("position_ids")
    if position_ids is None or _uses_cache(kwargs):
        return cls_forward(self, *args, **kwargs)
    inputs = args[0] if args else kwargs.get("input_ids")
    if inputs is None:
        inputs = kwargs.get("inputs_embeds")
    mask = kwargs.get("attention_mask")
    if mask is not None and not (isinstance(mask, torch.Tensor) and mask.dim() == 2):
        raise ValueError("packed-example boundaries take a 2D attention_mask (or none)")
    seq_idx, mask_all_ones = _find_boundaries(position_ids, inputs.shape[0], mask, consecutive=not mamba2)
    if seq_idx is None:
        return cls_forward(self, *args, **kwargs)
    if mask is not None:
        if mask_all_ones:
            kwargs["attention_mask"] = None  # transformers then builds the block-causal mask from position_ids
        elif not mamba2:
            raise ValueError("a packed row (position_ids restarting at 0) with attention_mask zeros: give the "
                             "padding its own position_ids restarting at 0 (labels -100) and no attention_mask")
    kwargs["use_cache"] = False  # a cache over several examples means nothing (and would hide the packing)
    base = self.base_model
    base.__dict__[_PENDING] = seq_idx
    try:
        return cls_forward(self, *args, **kwargs)
    finally:
        base.__dict__.pop(_PENDING, None)


def _base_forward(self, *args, **kwargs):
    seq_idx = self.__dict__.pop(_PENDING, None)
    if seq_idx is not None:
        kwargs[_SEQ_IDX] = seq_idx
    return type(self).forward(self, *args, **kwargs)


def _mixer_forward(self, *args, **kwargs):
    seq_idx = kwargs.pop(_SEQ_IDX, None)
    if seq_idx is None:
        return type(self).forward(self, *args, **kwargs)
    bound = _mixer_signature(type(self)).bind(self, *args, **kwargs).arguments
    if bound.get("cache") is not None or bound.get("cache_params") is not None:
        raise ValueError("packed rows run without a cache")
    return packed_mixer_forward(self, bound["hidden_states"], seq_idx, bound.get("attention_mask"))


@functools.cache
def _mixer_signature(cls) -> inspect.Signature:
    return inspect.signature(cls.forward)


@functools.cache
def _model_forward_for(cls):
    """A copy of ``_model_forward`` whose signature is ``cls.forward``'s plus ``position_ids``."""
    func = types.FunctionType(_model_forward.__code__, _model_forward.__globals__, "forward")
    func.__signature__ = _model_signature(cls)
    func.__doc__ = cls.forward.__doc__
    return func


def _mixer_classes() -> tuple[type, ...]:
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer
    from transformers.models.zamba2.modeling_zamba2 import Zamba2MambaMixer
    return Mamba2Mixer, Zamba2MambaMixer


#: the ``config.model_type`` of the families this layer keeps packed examples apart in
BOUNDARY_MODEL_TYPES = ("mamba2", "zamba2")


def supports_packed_boundaries(model: torch.nn.Module) -> bool:
    """Whether ``enable_packed_boundaries`` knows this model (transformers' Mamba2 and Zamba2 causal LMs)."""
    return getattr(getattr(model, "config", None), "model_type", None) in BOUNDARY_MODEL_TYPES \
        and hasattr(model, "base_model") and any(isinstance(m, _mixer_classes()) for m in model.modules())


def packed_boundaries_enabled(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "__dict__", {}).get(_FLAG))


def enable_packed_boundaries(model: torch.nn.Module) -> torch.nn.Module:
    """Make ``model`` (a Mamba2 / Zamba2 causal LM instance) keep packed examples apart; returns it.

    Idempotent; other model families are returned unchanged (see ``supports_packed_boundaries``). The wrappers
    are methods bound to the instance (they survive ``.to()``, and ``copy.deepcopy`` rebinds them to the copy);
    the saved checkpoint is unaffected.
    """
    if packed_boundaries_enabled(model) or not supports_packed_boundaries(model):
        return model
    _check_version()
    mixers = _mixer_classes()
    for module in model.modules():
        if isinstance(module, mixers):
            module.forward = types.MethodType(_mixer_forward, module)
    base = model.base_model
    if base is not model:
        base.forward = types.MethodType(_base_forward, base)
    model.forward = types.MethodType(_model_forward_for(type(model)), model)
    model.__dict__[_FLAG] = True
    return model


# ---- the boundary-aware Mamba2 mixer -------------------------------------------------------------------------
def _apply_padding_mask(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is None or attention_mask.dim() != 2:
        return hidden_states
    return (hidden_states * attention_mask[:, :, None]).to(hidden_states.dtype)


def packed_mixer_forward(m, hidden_states: torch.Tensor, seq_idx: torch.Tensor,
                         attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """A Mamba2Mixer / Zamba2MambaMixer ``m`` over rows of packed examples (``seq_idx``: (batch, seq_len))."""
    batch, seq_len, _ = hidden_states.shape
    dtype = hidden_states.dtype
    projected = m.in_proj(_apply_padding_mask(hidden_states, attention_mask))
    A = -torch.exp(m.A_log.float())
    seq_idx = seq_idx.to(device=hidden_states.device, dtype=torch.int32).contiguous()
    kernels = _kernels_for(m, projected)
    if kernels is not None and m.training and projected.shape[-1] % 8 == 0:  # transformers' fused call + seq_idx
        return kernels["split_conv1d_scan"](
            projected, m.conv1d.weight.squeeze(1), m.conv1d.bias, m.dt_bias, A, D=m.D, chunk_size=m.chunk_size,
            seq_idx=seq_idx, dt_limit=m.time_step_limit, activation=m.activation, rmsnorm_weight=m.norm.weight,
            rmsnorm_eps=m.norm.variance_epsilon, outproj_weight=m.out_proj.weight, outproj_bias=m.out_proj.bias,
            headdim=m.head_dim, ngroups=m.n_groups, norm_before_gate=False)
    gate, xBC, dt = projected.split([m.intermediate_size, m.conv_dim, m.num_heads], dim=-1)
    groups_state = m.n_groups * m.ssm_state_size
    if kernels is not None:
        xBC = kernels["conv1d"](xBC.contiguous().transpose(1, 2), m.conv1d.weight.squeeze(1), m.conv1d.bias,
                                seq_idx=seq_idx, activation=m.activation).transpose(1, 2)
    else:
        xBC = packed_causal_conv1d(xBC, m.conv1d.weight, m.conv1d.bias, seq_idx, m.activation)
    xBC = _apply_padding_mask(xBC, attention_mask)
    x, B, C = torch.split(xBC, [m.intermediate_size, groups_state, groups_state], dim=-1)
    x = x.reshape(batch, seq_len, m.num_heads, m.head_dim)
    B = B.reshape(batch, seq_len, m.n_groups, m.ssm_state_size)
    C = C.reshape(batch, seq_len, m.n_groups, m.ssm_state_size)
    if kernels is not None:
        y = kernels["chunk_scan"](x, dt, A, B, C, chunk_size=m.chunk_size, D=m.D, z=None, dt_bias=m.dt_bias,
                                  seq_idx=seq_idx, dt_softplus=True, dt_limit=m.time_step_limit)
    else:
        y = packed_ssd_scan(x, dt, A, B, C, m.chunk_size, seq_idx, D=m.D, dt_bias=m.dt_bias,
                            dt_limit=m.time_step_limit)
    y = m.norm(y.reshape(batch, seq_len, -1), gate)
    return m.out_proj(y.to(dtype))


def _kernels_for(m, projected: torch.Tensor) -> dict | None:
    """The CUDA kernels for mixer ``m``, or None for the PyTorch path. causal-conv1d takes seq_idx only in its
    channel-last layout, whose channels (and strides) must be multiples of 8."""
    if not projected.is_cuda or m.activation not in ("silu", "swish") or m.conv_dim % 8:
        return None
    return _cuda_kernels()


@functools.cache
def _cuda_kernels() -> dict | None:
    """mamba-ssm's and causal-conv1d's functions that take ``seq_idx``, or None where they do not import."""
    try:
        from causal_conv1d import causal_conv1d_fn
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined, mamba_split_conv1d_scan_combined
    except Exception:  # noqa: BLE001 - absent, or built without CUDA: the PyTorch path runs
        return None
    return {"conv1d": causal_conv1d_fn, "chunk_scan": mamba_chunk_scan_combined,
            "split_conv1d_scan": mamba_split_conv1d_scan_combined}


def packed_causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, seq_idx: torch.Tensor,
                         activation: str | None) -> torch.Tensor:
    """The depthwise causal conv1d of a Mamba2 mixer over ``x`` (batch, seq_len, channels), where a tap that
    reaches back into another example (``seq_idx`` differs) reads zero, as causal-conv1d does with ``seq_idx``."""
    from transformers.activations import ACT2FN

    seq_len = x.shape[1]
    weight = weight.reshape(weight.shape[0], -1).to(x.dtype)  # (channels, kernel): Conv1d's (channels, 1, kernel)
    kernel = weight.shape[-1]
    out = x * weight[:, kernel - 1]
    for back in range(1, min(kernel, seq_len)):  # tap `back` reads x[t - back]
        same = (seq_idx[:, back:] == seq_idx[:, :-back])[..., None]
        tap = (x[:, :-back] * weight[:, kernel - 1 - back]) * same
        out = out + F.pad(tap, (0, 0, back, 0))
    if bias is not None:
        out = out + bias
    return ACT2FN[activation](out) if activation is not None else out


def _segment_sum(x: torch.Tensor) -> torch.Tensor:
    """``out[..., i, j] = sum(x[..., j+1 : i+1])`` for j <= i, -inf above the diagonal (transformers' segment_sum)."""
    n = x.size(-1)
    x = x[..., None].expand(*x.shape, n)
    x = x.masked_fill(~torch.tril(torch.ones(n, n, device=x.device, dtype=torch.bool), diagonal=-1), 0)
    out = torch.cumsum(x, dim=-2)
    return out.masked_fill(~torch.tril(torch.ones(n, n, device=x.device, dtype=torch.bool)), -torch.inf)


def packed_ssd_scan(x, dt, A, B, C, chunk_size: int, seq_idx, D=None, dt_bias=None,
                    dt_limit=(0.0, float("inf"))) -> torch.Tensor:
    """Mamba2's chunked SSD scan with the state reset at each example's first token (``seq_idx`` changes).

    x: (b, l, h, p); dt: (b, l, h) before bias/softplus; A: (h,); B, C: (b, l, g, n); seq_idx: (b, l) int.
    Returns (b, l, h, p) float32, the D skip included. The same discretization as transformers' torch path
    (dt + dt_bias, softplus, clamp to dt_limit; fp32), with mamba-ssm's seq_idx masking in each of its 4 steps.
    """
    batch, seq_len, heads, head_dim = x.shape
    groups = B.shape[2]
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    dt = torch.clamp(F.softplus(dt), min=dt_limit[0], max=dt_limit[1]).float()
    x = x.float()
    B = B.float().repeat_interleave(heads // groups, dim=2, output_size=heads)
    C = C.float().repeat_interleave(heads // groups, dim=2, output_size=heads)
    residual = D[..., None] * x if D is not None else None

    pad = (chunk_size - seq_len % chunk_size) % chunk_size
    chunks = (seq_len + pad) // chunk_size

    def chunked(t):  # (b, l, ...) -> (b, c, chunk, ...), zero padded
        t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
        return t.reshape(batch, chunks, chunk_size, *t.shape[2:])

    xdt = chunked(x * dt[..., None])
    A = chunked(A * dt).permute(0, 3, 1, 2)  # (b, h, c, chunk)
    B, C = chunked(B), chunked(C)
    # padding continues the last example (its x, dt and B are zero: it adds nothing)
    seq = torch.cat([seq_idx, seq_idx[:, -1:].expand(-1, pad)], dim=1).reshape(batch, chunks, chunk_size)
    A_cumsum = torch.cumsum(A, dim=-1)

    # 1. within a chunk: only pairs of the same example
    same = (seq[..., :, None] == seq[..., None, :])[:, None]  # (b, 1, c, l, s)
    L = torch.exp(_segment_sum(A).masked_fill(~same, -torch.inf))
    scores = torch.einsum("bclhn,bcshn->bclsh", C, B) * L.permute(0, 2, 3, 4, 1)
    y_diag = torch.einsum("bclsh,bcshp->bclhp", scores, xdt)

    # 2. each chunk's own state: only the positions of the example the chunk ends in
    last = seq[..., -1]  # (b, c)
    decay_states = torch.exp(A_cumsum[..., -1:] - A_cumsum) * (seq == last[..., None])[:, None]
    states = torch.einsum("bclhn,bclhp->bchpn", B * decay_states.permute(0, 2, 3, 1)[..., None], xdt)

    # 3. states passed between chunks: chunk z's state reaches chunk c's start only within one example
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)  # (b, c+1, h, p, n), [0]: zero start
    owner = torch.cat([torch.zeros_like(last[:, :1]), last], dim=1)  # example of each entry's state, (b, c+1)
    keep = (owner[:, :, None] == owner[:, None, :])[:, None]  # (b, 1, c+1, c+1): [to, from]
    decay_chunk = torch.exp(_segment_sum(F.pad(A_cumsum[..., -1], (1, 0))).masked_fill(~keep, -torch.inf))
    states = torch.einsum("bzch,bzhpn->bchpn", decay_chunk.transpose(1, 3), states)[:, :-1]

    # 4. the state entering a chunk reaches only the positions of its own example
    reads = (seq == owner[:, :-1, None])[:, None]  # (b, 1, c, l)
    decay_out = torch.exp(A_cumsum) * reads
    y_off = torch.einsum("bclhn,bchpn->bclhp", C, states) * decay_out.permute(0, 2, 3, 1)[..., None]

    y = (y_diag + y_off).reshape(batch, chunks * chunk_size, heads, head_dim)[:, :seq_len]
    return y + residual if residual is not None else y
