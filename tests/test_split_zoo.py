"""The split over the transformers model zoo (tiny random configs), checked per parameter by rule.

The rule here is written from what each tensor *is* (its name and shape), independently of the split's own
module-type logic: a hidden weight matrix (or MoE expert stack) goes to Muon; embeddings, the head, norms,
biases, conv1d kernels, SSM parameters (A_log, D, dt_bias, dt_proj) and MoE routers go to AdamW.
"""

import functools

import pytest
import torch
import transformers as T

from optimizers import split_parameters
from test_param_split import ATTN, CONFIGS as SSM_CONFIGS, TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MOE = dict(num_experts_per_tok=1, moe_intermediate_size=16)
CONFIGS = {
    **SSM_CONFIGS,
    "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2)),
    "gpt_neox": lambda: T.GPTNeoXForCausalLM(T.GPTNeoXConfig(**TINY, intermediate_size=32, num_attention_heads=2)),
    "mixtral": lambda: T.MixtralForCausalLM(T.MixtralConfig(**TINY, **ATTN, num_local_experts=2,
                                                            num_experts_per_tok=1)),
    "qwen3_moe": lambda: T.Qwen3MoeForCausalLM(T.Qwen3MoeConfig(**TINY, **ATTN, **MOE, num_experts=2,
                                                                head_dim=8)),
}
ADAMW_WORDS = ("embed", "wte", "wpe", "lm_head", "embed_out", "conv1d", "A_log", "dt_proj", "dt_bias", "norm",
               "router", "ln_")


def rule_on_muon(name: str, p: torch.Tensor) -> bool:
    module, _, leaf = name.rpartition(".")
    if p.ndim not in (2, 3) or leaf in ("D", "bias") or any(w in name for w in ADAMW_WORDS):
        return False
    if module.rpartition(".")[2] == "gate" and p.ndim == 2 and p.shape[0] <= 8:  # MoE router: (num_experts, d)
        return False
    return True


@functools.lru_cache(maxsize=None)
def build(arch):
    torch.manual_seed(0)
    return CONFIGS[arch]()


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_split_follows_the_rule(arch):
    model = build(arch)
    split = split_parameters(model)
    on_muon = {n for g in split.groups if g.use_muon for n in g.param_names}
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if rule_on_muon(n, p)}
    assert on_muon, f"{arch}: nothing on Muon"
    assert sorted(on_muon - expected) == [], "on Muon against the rule"
    assert sorted(expected - on_muon) == [], "on AdamW against the rule"
    listed = [n for g in split.groups for n in g.param_names]
    assert sorted(listed) == sorted(params), "every trainable parameter exactly once"
    # Conv1D (stored (in, out)) and only Conv1D goes to the fan_in_first group
    conv = {f"{m}.weight" for m, mod in model.named_modules() if type(mod).__name__ == "Conv1D"}
    assert set(split.names("muon_fan_in_first")) == conv
    # MoE expert stacks are on Muon whole (3-D)
    stacks = {n for n, p in params.items() if p.ndim == 3 and "experts" in n}
    assert stacks <= on_muon
    if arch in ("jamba", "mixtral", "qwen3_moe"):
        assert stacks, f"{arch}: expected 3-D expert stacks"
