"""Named model sizes: plain data over transformers' own architectures (no torch import).

Every size is a set of keyword arguments for a transformers config class, so a checkpoint saved by
``save_pretrained`` loads with ``AutoModelForCausalLM.from_pretrained`` and ``generate()`` works, with no
custom modeling code.

* ``hybrid-*`` -> ``Zamba2Config`` / ``Zamba2ForCausalLM``: Mamba2 layers plus ONE attention+MLP block whose
  weights are shared (tied) across depth and reused every ``every``-th layer; each reuse adds only a small
  unshared linear and a low-rank MLP adapter. That is exactly our "Mamba + shared attention" design.
  Bamba (``BambaForCausalLM``) was the other candidate, but each of its ``attn_layer_indices`` gets its own
  attention weights (separate, not shared), so it is a plain interleaved hybrid, not this one.
* ``mamba-*``  -> ``Mamba2Config`` / ``Mamba2ForCausalLM``: pure Mamba2, same parameter ladder.

Vocabulary: the real sizes use the gpt-neox-20b tokenizer (50,277 tokens). ``models.build_config`` pads the
vocabulary to a multiple of ``VOCAB_MULTIPLE`` = 64, i.e. 50,304 rows (Pythia and nanoGPT do the same: the
LM-head matmul then tiles evenly on tensor cores; mamba-ssm's own checkpoints use 50,280, a multiple of 8 only).
The extra rows are never produced by the tokenizer. The ``*-tiny`` sizes use the bundled 1,024-token BPE
(already a multiple of 64). ``params`` is the target count at those vocabularies, tied embeddings counted once;
``tests/test_model_configs.py`` checks every size is within 5% of it (built on the ``meta`` device).

Shapes (checked for every size by the tests): Mamba2 heads are 64 wide (``expand * hidden == heads * 64``),
the shared attention of Zamba2 sees ``2 * hidden`` features and its heads are 128 wide (64 in hybrid-tiny-2).
"""

from __future__ import annotations

#: len(tokenizer) of the tokenizers the sizes are designed for; used to count parameters against ``params``.
TOKENIZER_VOCAB_SIZES = {"EleutherAI/gpt-neox-20b": 50_277, "bundled": 1024}

#: Embedding rows are padded up to a multiple of this (see the module docstring).
VOCAB_MULTIPLE = 64


def padded_vocab_size(vocab_size: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """Smallest multiple of ``multiple`` >= ``vocab_size``: ``padded_vocab_size(50277) == 50304``."""
    return -(-int(vocab_size) // multiple) * multiple


def hybrid_layers(num_layers: int, every: int) -> list[str]:
    """Zamba2 ``layers_block_type``: Mamba2 layers, with the shared attention block before every
    ``every``-th one (``"linear_attention"`` is transformers' name for a Mamba2 layer)."""
    return ["hybrid" if i % every == every - 1 else "linear_attention" for i in range(num_layers)]


# ---- Zamba2 (hybrid) -------------------------------------------------------------------------------------
_ZAMBA2 = {
    "use_mem_rope": True,  # RoPE in the shared attention (off by default = position-blind attention); Zamba2 checkpoints use it
    "use_cache": False,  # a training forward must not build a cache (it bypasses the fused mamba-ssm kernel); build_model turns it on for generate()
}


def _zamba2(hidden: int, layers: int, every: int, attention_heads: int, **extra) -> dict:
    return {
        **_ZAMBA2,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "layers_block_type": hybrid_layers(layers, every),
        "n_mamba_heads": 2 * hidden // 64,  # Mamba2 head width 64 (the mamba-ssm default), expand=2
        "num_attention_heads": attention_heads,  # attention input is 2*hidden: head width 2*hidden/heads
        **extra,
    }


# ---- Mamba2 (pure) ---------------------------------------------------------------------------------------
_MAMBA2 = {
    "n_groups": 1,  # one B/C group like mamba-ssm's mamba2-130m..2.7b (default 8 is for wide, tensor-parallel models)
    "tie_word_embeddings": True,  # the embedding is 1/4-1/2 of these sizes; mamba-ssm ties it too
    "initializer_range": 0.02,  # GPT-2/mamba-ssm std; the default 0.1 starts well above ln(vocab) loss
    # rescale_prenorm_residual stays False: transformers applies it again to the weights from_pretrained loads
    "use_cache": False,  # see _ZAMBA2: no cache in the training forward; generate() still uses one
}


def _mamba2(hidden: int, layers: int, **extra) -> dict:
    return {
        **_MAMBA2,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_heads": 2 * hidden // 64,  # head_dim 64 (default), expand 2: heads * 64 == 2 * hidden
        **extra,
    }


_NEOX = "EleutherAI/gpt-neox-20b"

#: name -> {"architecture", "tokenizer", "params" (target), "description", "config" (transformers kwargs)}
MODEL_CONFIGS: dict[str, dict] = {
    # -- hybrid: Mamba2 + one shared attention block every 6th layer (Zamba2-1.2B's rhythm) --
    "hybrid-small": {
        "architecture": "zamba2", "tokenizer": _NEOX, "params": 75_000_000,
        "description": "512 wide, 24 layers (4 uses of the shared block)",
        "config": _zamba2(512, 24, every=6, attention_heads=8),
    },
    "hybrid-small-standard": {
        "architecture": "zamba2", "tokenizer": _NEOX, "params": 112_000_000,
        "description": "640 wide, 25 layers (4 uses of the shared block)",
        "config": _zamba2(640, 25, every=6, attention_heads=10),
    },
    "hybrid-small-pro": {
        "architecture": "zamba2", "tokenizer": _NEOX, "params": 165_000_000,
        "description": "768 wide, 29 layers (4 uses of the shared block)",
        "config": _zamba2(768, 29, every=6, attention_heads=12),
    },
    "hybrid-medium": {
        "architecture": "zamba2", "tokenizer": _NEOX, "params": 350_000_000,
        "description": "1024 wide, 40 layers (6 uses of the shared block)",
        "config": _zamba2(1024, 40, every=6, attention_heads=16),
    },
    # -- pure Mamba2 on the same ladder --
    "mamba-small": {
        "architecture": "mamba2", "tokenizer": _NEOX, "params": 75_000_000,
        "description": "512 wide, 29 Mamba2 layers",
        "config": _mamba2(512, 29),
    },
    "mamba-small-standard": {
        "architecture": "mamba2", "tokenizer": _NEOX, "params": 112_000_000,
        "description": "640 wide, 30 Mamba2 layers",
        "config": _mamba2(640, 30),
    },
    "mamba-small-pro": {
        "architecture": "mamba2", "tokenizer": _NEOX, "params": 165_000_000,
        "description": "768 wide, 34 Mamba2 layers",
        "config": _mamba2(768, 34),
    },
    "mamba-medium": {
        "architecture": "mamba2", "tokenizer": _NEOX, "params": 350_000_000,
        "description": "1024 wide, 45 Mamba2 layers",
        "config": _mamba2(1024, 45),
    },
    # -- CPU-sized models for tests and demos (bundled 1,024-token tokenizer) --
    "hybrid-tiny": {
        "architecture": "zamba2", "tokenizer": "bundled", "params": 2_800_000,
        "description": "192 wide, 6 layers, shared block every 3rd; trains on a laptop CPU",
        "config": _zamba2(
            192, 6, every=3, attention_heads=3,
            adapter_rank=32,  # default 128 is wider than what a 192-wide model needs
            chunk_size=64,  # CPU: the PyTorch SSD scan made train steps ~1.2-1.5x slower at the default 256; real sizes keep 256
        ),
    },
    "hybrid-tiny-2": {
        "architecture": "zamba2", "tokenizer": "bundled", "params": 2_150_000,
        "description": "a second tiny hybrid for cross-checks: two alternating shared blocks with q/k/v adapters",
        "config": _zamba2(
            128, 8, every=2, attention_heads=4,
            num_mem_blocks=2,  # two shared blocks used alternately (A B A B), as in Zamba2-2.7B
            use_shared_attention_adapter=True,  # per-use low-rank q/k/v adapters, as in Zamba2-2.7B (needs no GQA)
            adapter_rank=16,  # small adapters for a 128-wide model
            mamba_ngroups=2,  # two B/C groups: exercises the grouped SSM path
            mamba_d_state=32,  # half the default state: a different scan shape from hybrid-tiny
            chunk_size=32,  # CPU-friendly chunk (see hybrid-tiny), and a second value for cross-checks
        ),
    },
    "mamba-tiny": {
        "architecture": "mamba2", "tokenizer": "bundled", "params": 2_200_000,
        "description": "192 wide, 8 Mamba2 layers; trains on a laptop CPU",
        "config": _mamba2(
            192, 8,
            state_size=64,  # half the default 128: a cheaper scan, plenty for a 192-wide model
            chunk_size=64,  # CPU-friendly chunk (see hybrid-tiny)
        ),
    },
}


def proxy_size(size: str, layers: int, *, width: int | None = None, tokenizer: str | None = None,
               chunk_size: int | None = 64) -> dict:
    """A reduced-depth stand-in for the named ``size``, as a ``MODEL_CONFIGS`` entry (``load_presets_file`` form
    with ``base``), for sweeping learning rates at the size's real width on a CPU or one GPU.

    It keeps the size's heads, SSM state and expansion at its own width (or at ``width``, with the head widths
    kept: Mamba2 heads 64 wide, the shared attention's heads as wide as the size's), and has ``layers`` layers; a
    hybrid uses its shared block once, as the last layer. ``tokenizer`` replaces the size's (the bundled one for CPU
    studies); ``chunk_size`` sets the SSD scan's chunk (exact for any chunk; 64 is faster on a CPU, None keeps it).

    >>> p = proxy_size("hybrid-small-standard", 3)
    >>> p["base"], p["config"]["layers_block_type"], p["config"]["num_hidden_layers"]
    ('hybrid-small-standard', ['linear_attention', 'linear_attention', 'hybrid'], 3)
    >>> proxy_size("mamba-small", 2, width=192)["config"]["num_heads"]
    6
    """
    entry = MODEL_CONFIGS[size]
    config: dict = {"num_hidden_layers": int(layers)}
    if entry["architecture"] == "zamba2":
        config["layers_block_type"] = hybrid_layers(int(layers), int(layers))
    if width is not None and width != entry["config"]["hidden_size"]:
        hidden = entry["config"]["hidden_size"]
        config["hidden_size"] = int(width)
        if entry["architecture"] == "zamba2":
            head = 2 * hidden // entry["config"]["num_attention_heads"]
            config.update(n_mamba_heads=2 * width // 64, num_attention_heads=max(2 * width // head, 1))
        else:
            config["num_heads"] = 2 * width // 64
    if chunk_size is not None:
        config["chunk_size"] = int(chunk_size)
    shown = f"width {width}, " if width is not None else ""
    out = {"base": size, "description": f"{size} proxy: {shown}{layers} layers", "config": config}
    if tokenizer is not None:
        out["tokenizer"] = tokenizer
    return out
