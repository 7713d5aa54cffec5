"""Build, load and describe the models of the named sizes (transformers' own Zamba2 and Mamba2 classes).

    from mamba_trainer.models import build_model, kernel_report, count_parameters
    print(kernel_report())                               # once, at start
    model = build_model("hybrid-tiny", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=tokenizer.eos_token_id, seed=0)

Checkpoints are ordinary transformers checkpoints: ``save_pretrained`` then ``AutoModelForCausalLM.from_pretrained``
and ``generate()`` need nothing from this package.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util

import torch
from transformers import AutoModelForCausalLM, Mamba2Config, PreTrainedConfig, PreTrainedModel, Zamba2Config

from configs.model_configs import ConfigError, get_model_config, padded_vocab_size, unknown_name_error
from configs.text import first_line, one_line

from .packed import enable_packed_boundaries

CONFIG_CLASSES = {"zamba2": Zamba2Config, "mamba2": Mamba2Config}


def config_keys(architecture: str) -> set[str]:
    """The keyword arguments the transformers config class of ``architecture`` understands."""
    cls = CONFIG_CLASSES[architecture]
    return {f.name for f in dataclasses.fields(cls)} | set(getattr(cls, "attribute_map", {}))


def check_config(config: PreTrainedConfig, size: str = "custom") -> None:
    """Raise ConfigError (one line) when the shapes of a Zamba2/Mamba2 config do not fit together."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ConfigError(f"model size '{size}': {what}")

    need(config.chunk_size > 0, f"chunk_size must be > 0, got {config.chunk_size}")
    if config.model_type == "mamba2":
        inner = config.expand * config.hidden_size
        need(inner == config.num_heads * config.head_dim,
             f"expand*hidden_size ({inner}) must equal num_heads*head_dim ({config.num_heads}*{config.head_dim})")
        need(config.num_heads % config.n_groups == 0,
             f"num_heads ({config.num_heads}) must be a multiple of n_groups ({config.n_groups})")
        return
    types = list(config.layers_block_type)
    need(len(types) == config.num_hidden_layers,
         f"layers_block_type has {len(types)} entries but num_hidden_layers is {config.num_hidden_layers} "
         "(configs.model_sizes.hybrid_layers(n, every) builds the list)")
    need(set(types) <= {"linear_attention", "hybrid"},
         f"layers_block_type may hold only 'mamba'/'linear_attention' and 'hybrid', got {sorted(set(types))}")
    need("hybrid" in types, "layers_block_type has no 'hybrid' layer: use a mamba-* size for a pure Mamba2 model")
    inner = config.mamba_expand * config.hidden_size
    need(inner % config.n_mamba_heads == 0,
         f"mamba_expand*hidden_size ({inner}) must be a multiple of n_mamba_heads ({config.n_mamba_heads})")
    need(config.n_mamba_heads % config.mamba_ngroups == 0,
         f"n_mamba_heads ({config.n_mamba_heads}) must be a multiple of mamba_ngroups ({config.mamba_ngroups})")
    need((2 * config.hidden_size) % config.num_attention_heads == 0,
         f"2*hidden_size ({2 * config.hidden_size}) must be a multiple of num_attention_heads ({config.num_attention_heads})")
    need(config.num_attention_heads % config.num_key_value_heads == 0,
         f"num_attention_heads ({config.num_attention_heads}) must be a multiple of num_key_value_heads "
         f"({config.num_key_value_heads})")
    need(not config.use_shared_attention_adapter or config.num_key_value_heads == config.num_attention_heads,
         "use_shared_attention_adapter needs num_key_value_heads == num_attention_heads (transformers' adapters "
         "are as wide as the attention input)")
    need(not config.use_mem_rope or config.attention_head_dim % 2 == 0,
         f"RoPE needs an even attention head width, got {config.attention_head_dim}")


def build_config(size: str, vocab_size: int, pad_token_id: int | None = None, bos_token_id: int | None = None,
                 eos_token_id: int | None = None, **overrides) -> PreTrainedConfig:
    """The transformers config (Zamba2Config / Mamba2Config) of a named size.

    ``vocab_size`` is ``len(tokenizer)``; the embedding is padded up to a multiple of 64 (50,277 -> 50,304), so
    ``config.vocab_size >= len(tokenizer)``. The special-token ids replace the architecture's defaults (which
    belong to other tokenizers); None stays None. For Zamba2, ``pad_token_id`` is also the embedding's
    ``padding_idx`` (a zero row): prefer a real pad token to reusing EOS. ``overrides`` are config kwargs.
    """
    entry = get_model_config(size)
    arch = entry["architecture"]
    valid = config_keys(arch)
    for key in [*entry["config"], *overrides]:
        if key in {"vocab_size", "pad_token_id", "bos_token_id", "eos_token_id"}:
            raise ConfigError(f"model size '{size}': {key} is set from the tokenizer, not in the size's config")
        if key not in valid:
            raise ConfigError(f"model size '{size}': {unknown_name_error('config key', key, valid)}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 0:
        raise ConfigError(f"model size '{size}': vocab_size must be a positive integer (len(tokenizer)), got {vocab_size!r}")
    ids = {"pad_token_id": pad_token_id, "bos_token_id": bos_token_id, "eos_token_id": eos_token_id}
    for name, value in ids.items():
        if value is not None and not (isinstance(value, int) and 0 <= value < vocab_size):
            raise ConfigError(f"model size '{size}': {name} must be in [0, {vocab_size}) or None, got {value!r}")
    kwargs = {**entry["config"], **overrides, **ids, "vocab_size": padded_vocab_size(vocab_size)}
    types, layers = kwargs.get("layers_block_type"), kwargs.get("num_hidden_layers")
    if arch == "zamba2" and isinstance(types, list) and isinstance(layers, int) and len(types) != layers:
        raise ConfigError(f"model size '{size}': layers_block_type has {len(types)} entries but num_hidden_layers is "
                          f"{layers}; set both (configs.model_sizes.hybrid_layers(n, every) builds the list)")
    try:
        config = CONFIG_CLASSES[arch](**kwargs)
    except Exception as exc:  # strict-dataclass type errors and transformers' own shape checks
        raise ConfigError(f"model size '{size}': {one_line(exc, 300)}") from None
    check_config(config, size)
    return config


def build_model(size: str, vocab_size: int, pad_token_id: int | None = None, bos_token_id: int | None = None,
                eos_token_id: int | None = None, *, dtype: torch.dtype | None = None, seed: int | None = None,
                **overrides) -> PreTrainedModel:
    """A freshly initialized ``Zamba2ForCausalLM`` / ``Mamba2ForCausalLM`` of a named size.

    ``seed`` seeds torch before initialization (same seed, same weights). Build under ``torch.device("meta")``
    to get shapes without memory. The config keeps ``use_cache=False`` (a training forward then takes the fused
    kernel path); ``generation_config.use_cache`` is True, so ``generate()`` decodes with the recurrent cache.
    The model keeps packed examples apart (``position_ids`` restarting at 0; see ``mamba_trainer.packed``).
    """
    config = build_config(size, vocab_size, pad_token_id, bos_token_id, eos_token_id, **overrides)
    if seed is not None:
        torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    generation = model.generation_config
    generation.use_cache = True
    generation.pad_token_id, generation.bos_token_id, generation.eos_token_id = pad_token_id, bos_token_id, eos_token_id
    return enable_packed_boundaries(model)


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters, each tensor once (tied embeddings and Zamba2's shared blocks count once).
    Works on the ``meta`` device."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # already de-duplicated by identity
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


# ---- kernels -------------------------------------------------------------------------------------------------
def _probe(package: str, distribution: str, module: str) -> str | None:
    """Version string when ``module`` imports, None when the package is absent; an error note otherwise.
    mamba-ssm is source-only and raises on import without CUDA, so never let its import escape."""
    try:
        if importlib.util.find_spec(package) is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable"
        return f"!{type(exc).__name__}"
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def kernel_info() -> dict:
    """What the Mamba2 layers will run on: {"mamba_ssm", "causal_conv1d", "mambapy": version | None | "!Error",
    "cuda": bool, "fused": bool}. transformers imports the same modules to pick its implementation."""
    info = {
        "mamba_ssm": _probe("mamba_ssm", "mamba-ssm", "mamba_ssm.ops.triton.ssd_combined"),
        "causal_conv1d": _probe("causal_conv1d", "causal-conv1d", "causal_conv1d"),
        "mambapy": _probe("mambapy", "mambapy", "mambapy"),
        "cuda": torch.cuda.is_available(),
    }
    usable = lambda v: v is not None and not v.startswith("!")  # noqa: E731
    info["fused"] = info["cuda"] and usable(info["mamba_ssm"])
    return info


def describe_kernels(info: dict) -> str:
    """One line from ``kernel_info()``: which implementation runs, and why."""
    def state(name: str) -> str:
        v = info[name]
        return "not installed" if v is None else f"installed but fails to import ({v[1:]})" if v.startswith("!") else v

    conv_ok = info["causal_conv1d"] is not None and not info["causal_conv1d"].startswith("!")
    if info["fused"]:
        conv = f"causal-conv1d {info['causal_conv1d']}" if conv_ok else "PyTorch conv1d (causal-conv1d not installed)"
        head = f"kernels: mamba-ssm {info['mamba_ssm']} CUDA kernels + {conv}"
    else:
        head = (f"kernels: transformers' PyTorch path (CUDA: {'yes' if info['cuda'] else 'no'}; "
                f"mamba-ssm: {state('mamba_ssm')}; causal-conv1d: {state('causal_conv1d')})")
    return f"{head}; mambapy: {state('mambapy')} (used by Mamba-1 models only, not Mamba2/Zamba2)"


def kernel_report() -> str:
    """One line saying whether the mamba-ssm / causal-conv1d CUDA kernels or the PyTorch path will run."""
    return describe_kernels(kernel_info())


# ---- pretrained checkpoints -------------------------------------------------------------------------------------
def load_pretrained(path_or_id, **kwargs) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` for any Mamba-family checkpoint (Mamba, Mamba2, Zamba2, Jamba,
    Bamba, FalconMamba, ...): a local folder or a Hugging Face Hub id. ``kwargs`` go to ``from_pretrained``.
    Failures raise ``UserError`` with one line naming what was tried and how to pass a local folder. A Mamba2 or
    Zamba2 model keeps packed examples apart (``mamba_trainer.packed``); other families load unchanged."""
    from .errors import UserError
    from .paths import local_path

    text = str(path_or_id)
    local_hint = "pass a folder written by save_pretrained, e.g. --model_name_or_path checkpoints/<run>/final"
    path = local_path(text, f"model path '{{name}}' does not exist; {local_hint}")
    if path is not None:
        if not path.is_dir() or not (path / "config.json").is_file():
            raise UserError(f"model path '{text}' is not a model folder (no config.json); {local_hint}")
        try:
            return enable_packed_boundaries(AutoModelForCausalLM.from_pretrained(path, **kwargs))
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"cannot load the model in '{text}': {first_line(exc, 300)}") from None
    try:
        return enable_packed_boundaries(AutoModelForCausalLM.from_pretrained(text, **kwargs))
    except (OSError, ValueError, KeyError) as exc:  # offline, unknown repo, missing files, not a causal LM
        raise UserError(
            f"could not load '{text}' from the Hugging Face Hub ({first_line(exc, 160)}); without Hub access, "
            f"download it elsewhere (huggingface-cli download {text} --local-dir DIR), copy DIR here and pass "
            f"--model_name_or_path DIR") from None
