"""The Mamba-aware parameter split on tiny configs of every architecture family we may train."""

import functools

import pytest
import torch
import transformers as T
from torch import nn

from optimizers import MuonConfigError, create_muon_optimizer, split_parameters

TINY = dict(vocab_size=64, hidden_size=16, num_hidden_layers=2)
ATTN = dict(intermediate_size=32, num_attention_heads=2, num_key_value_heads=1)
SSM2 = dict(mamba_d_state=8, mamba_n_groups=1, mamba_chunk_size=8, mamba_expand=2)
CONFIGS = {
    "mamba": lambda: T.MambaForCausalLM(T.MambaConfig(**TINY, state_size=4, expand=2, conv_kernel=4, time_step_rank=4)),
    "mamba2": lambda: T.Mamba2ForCausalLM(T.Mamba2Config(**TINY, state_size=8, expand=2, head_dim=8, num_heads=4,
                                                         n_groups=1, conv_kernel=4, chunk_size=8)),
    "bamba": lambda: T.BambaForCausalLM(T.BambaConfig(**TINY, **ATTN, **SSM2, attn_layer_indices=[1], mamba_n_heads=4,
                                                      mamba_d_head=8)),
    "zamba2": lambda: T.Zamba2ForCausalLM(T.Zamba2Config(
        **{**TINY, "num_hidden_layers": 4}, num_attention_heads=2, num_key_value_heads=2, mamba_d_state=8,
        mamba_headdim=8, n_mamba_heads=4, mamba_expand=2, intermediate_size=32, num_mem_blocks=1,
        layers_block_type=["mamba", "hybrid", "mamba", "hybrid"], use_shared_attention_adapter=True,
        adapter_rank=4, use_mem_rope=True, chunk_size=8)),
    "jamba": lambda: T.JambaForCausalLM(T.JambaConfig(**TINY, **ATTN, num_experts=2, num_experts_per_tok=1,
                                                      expert_layer_period=2, expert_layer_offset=1, attn_layer_period=2,
                                                      attn_layer_offset=1, mamba_d_state=4, mamba_d_conv=4,
                                                      mamba_expand=2, mamba_dt_rank=4)),
    "falcon_h1": lambda: T.FalconH1ForCausalLM(T.FalconH1Config(**TINY, **ATTN, **SSM2, mamba_d_ssm=32, mamba_n_heads=4,
                                                                mamba_d_head=8, head_dim=8)),
    "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**TINY, **ATTN)),
}

# Specific parameters that must land in each group (not exhaustive: every parameter is checked to land once).
EXPECTED = {
    "mamba": {  # Mamba v1: 2-D A_log and dt_proj stay on AdamW; x_proj is a projection (Muon); head tied
        "muon": ["backbone.layers.0.mixer.in_proj.weight", "backbone.layers.0.mixer.x_proj.weight",
                 "backbone.layers.1.mixer.out_proj.weight"],
        "adamw_decay": ["backbone.layers.0.mixer.dt_proj.weight", "backbone.layers.0.mixer.conv1d.weight"],
        "adamw_no_decay": ["backbone.embeddings.weight", "backbone.layers.0.mixer.A_log", "backbone.layers.0.mixer.D",
                           "backbone.layers.0.mixer.dt_proj.bias", "backbone.layers.0.mixer.conv1d.bias",
                           "backbone.layers.0.norm.weight", "backbone.norm_f.weight"],
    },
    "mamba2": {
        "muon": ["backbone.layers.0.mixer.in_proj.weight", "backbone.layers.1.mixer.out_proj.weight"],
        "adamw_decay": ["lm_head.weight", "backbone.layers.0.mixer.conv1d.weight"],
        "adamw_no_decay": ["backbone.embeddings.weight", "backbone.layers.0.mixer.dt_bias",
                           "backbone.layers.0.mixer.A_log", "backbone.layers.0.mixer.D",
                           "backbone.layers.0.mixer.norm.weight", "backbone.norm_f.weight"],
    },
    "bamba": {
        "muon": ["model.layers.0.mamba.in_proj.weight", "model.layers.0.mamba.out_proj.weight",
                 "model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.o_proj.weight",
                 "model.layers.0.feed_forward.gate_proj.weight", "model.layers.0.feed_forward.down_proj.weight"],
        "adamw_decay": ["lm_head.weight", "model.layers.0.mamba.conv1d.weight"],
        "adamw_no_decay": ["model.embed_tokens.weight", "model.layers.0.mamba.dt_bias", "model.layers.0.mamba.A_log",
                           "model.layers.0.mamba.D", "model.layers.0.mamba.norm.weight",
                           "model.layers.0.input_layernorm.weight", "model.final_layernorm.weight"],
    },
    "zamba2": {  # shared block and its per-use LoRA adapters are linears (Muon); head tied to the embedding
        "muon": ["model.layers.0.mamba.in_proj.weight", "model.layers.1.linear.weight",
                 "model.layers.1.shared_transformer.self_attn.q_proj.weight",
                 "model.layers.1.shared_transformer.self_attn.o_proj.weight",
                 "model.layers.1.shared_transformer.self_attn.linear_q_adapter_list.0.0.weight",
                 "model.layers.1.shared_transformer.self_attn.linear_v_adapter_list.1.1.weight",
                 "model.layers.1.shared_transformer.feed_forward.gate_up_proj.weight",
                 "model.layers.1.shared_transformer.feed_forward.gate_up_proj_adapter_list.0.1.weight",
                 "model.layers.3.mamba_decoder.mamba.out_proj.weight"],
        "adamw_decay": ["model.layers.0.mamba.conv1d.weight"],
        "adamw_no_decay": ["model.embed_tokens.weight", "model.layers.0.mamba.dt_bias", "model.layers.0.mamba.A_log",
                           "model.layers.0.mamba.D", "model.layers.0.mamba.norm.weight",
                           "model.layers.1.shared_transformer.input_layernorm.weight", "model.final_layernorm.weight"],
    },
    "jamba": {  # Mamba v1 mixer + MoE: expert stacks (E, m, n) are Muon matrices, the router is AdamW
        "muon": ["model.layers.0.mamba.in_proj.weight", "model.layers.0.mamba.x_proj.weight",
                 "model.layers.1.self_attn.k_proj.weight", "model.layers.0.feed_forward.up_proj.weight",
                 "model.layers.1.feed_forward.experts.gate_up_proj", "model.layers.1.feed_forward.experts.down_proj"],
        "adamw_decay": ["lm_head.weight", "model.layers.0.mamba.dt_proj.weight",
                        "model.layers.1.feed_forward.router.weight"],
        "adamw_no_decay": ["model.embed_tokens.weight", "model.layers.0.mamba.A_log", "model.layers.0.mamba.D",
                           "model.layers.0.mamba.dt_proj.bias", "model.layers.0.mamba.dt_layernorm.weight",
                           "model.layers.0.mamba.b_layernorm.weight", "model.final_layernorm.weight"],
    },
    "falcon_h1": {
        "muon": ["model.layers.0.mamba.in_proj.weight", "model.layers.0.mamba.out_proj.weight",
                 "model.layers.0.self_attn.v_proj.weight", "model.layers.0.feed_forward.gate_proj.weight"],
        "adamw_decay": ["lm_head.weight", "model.layers.0.mamba.conv1d.weight"],
        "adamw_no_decay": ["model.embed_tokens.weight", "model.layers.0.mamba.dt_bias", "model.layers.0.mamba.A_log",
                           "model.layers.0.mamba.D", "model.layers.0.mamba.conv1d.bias",
                           "model.layers.0.pre_ff_layernorm.weight", "model.final_layernorm.weight"],
    },
    "llama": {
        "muon": ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.o_proj.weight",
                 "model.layers.0.mlp.gate_proj.weight", "model.layers.1.mlp.down_proj.weight"],
        "adamw_decay": ["lm_head.weight"],
        "adamw_no_decay": ["model.embed_tokens.weight", "model.layers.0.input_layernorm.weight", "model.norm.weight"],
    },
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@functools.lru_cache(maxsize=None)
def build(arch):
    torch.manual_seed(0)
    return CONFIGS[arch]()


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_split_per_architecture(arch):
    model = build(arch)
    split = split_parameters(model)
    for group, names in EXPECTED[arch].items():
        missing = sorted(set(names) - set(split.names(group)))
        assert not missing, f"{group} lacks {missing}"
    # a partition: every trainable parameter exactly once, Muon only matrices (or expert stacks)
    listed = [n for g in split.groups for n in g.param_names]
    assert sorted(listed) == sorted(n for n, _ in model.named_parameters())
    assert all(p.ndim in (2, 3) for _, p in split.muon)
    assert [g.name for g in split.groups] == ["muon", "adamw_decay", "adamw_no_decay"][: len(split.groups)]


def test_summary_counts_tensors_and_parameters():
    split = split_parameters(build("zamba2"))
    text = split.summary()
    muon = split.group("muon")
    assert f"{len(muon.params)}" in text and f"{sum(p.numel() for p in muon.params):,}" in text
    assert "adamw_no_decay" in text and "total" in text


def test_include_exclude_override_by_name():
    model = build("mamba")
    split = split_parameters(model, include=["*.dt_proj.weight"], exclude=["re:layers\\.1\\..*in_proj"])
    assert "backbone.layers.0.mixer.dt_proj.weight" in split.names("muon")
    assert "backbone.layers.1.mixer.in_proj.weight" in split.names("adamw_decay")
    assert "backbone.layers.0.mixer.in_proj.weight" in split.names("muon")


def test_include_of_a_non_matrix_is_an_error():
    with pytest.raises(MuonConfigError) as err:
        split_parameters(build("mamba2"), include=["*conv1d.weight"])
    assert "conv1d.weight" in str(err.value) and "\n" not in str(err.value)


def test_pattern_that_matches_nothing_is_an_error():
    with pytest.raises(MuonConfigError, match="in_projection"):
        split_parameters(build("llama"), exclude=["*in_projection*"])


def test_no_weight_decay_tags_and_frozen_parameters():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4))
    model[0].weight._no_weight_decay = True
    model[1].bias.requires_grad_(False)
    split = split_parameters(model)
    assert split.names("muon_no_decay") == ["0.weight"]
    assert split.names("muon") == ["1.weight", "2.weight"]
    assert "1.bias" not in [n for g in split.groups for n in g.param_names]
    opt = create_muon_optimizer(model, verbose=False)
    assert [(g["name"], g["weight_decay"]) for g in opt.param_groups] == [
        ("muon", 0.01), ("muon_no_decay", 0.0), ("adamw_no_decay", 0.0)]


def test_create_prints_summary_when_verbose(capsys):
    opt = create_muon_optimizer(build("llama"), lr=0.01)
    out = capsys.readouterr().out
    assert "muon" in out and "adamw_no_decay" in out
    assert [g["name"] for g in opt.param_groups] == ["muon", "adamw_decay", "adamw_no_decay"]
    assert opt.param_groups[1]["lr"] == pytest.approx(1e-3) and opt.param_groups[1]["weight_decay"] == 0.01
    create_muon_optimizer(build("llama"), verbose=False)
    assert capsys.readouterr().out == ""
