"""fused_row_blocks: the row blocks of fused projections, checked against what the forward does with each block."""

import pytest
import torch

from optimizers.fused_blocks import fused_row_blocks


def _bundled(size):
    from mamba_trainer.models import build_model

    return build_model(size, vocab_size=64, pad_token_id=0, seed=0)


def _bamba():
    from transformers import BambaConfig, BambaForCausalLM

    torch.manual_seed(0)
    return BambaForCausalLM(BambaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=48, attn_layer_indices=[1], mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=2,
        mamba_d_state=8, mamba_expand=2, mamba_chunk_size=16))


def _falcon_h1():
    from transformers import FalconH1Config, FalconH1ForCausalLM

    torch.manual_seed(0)
    return FalconH1ForCausalLM(FalconH1Config(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=48, mamba_n_heads=4, mamba_d_head=12, mamba_n_groups=2, mamba_d_state=8,
        mamba_d_ssm=48, mamba_chunk_size=16, head_dim=16, mamba_rms_norm=True))


MODELS = {"mamba-tiny": lambda: _bundled("mamba-tiny"), "hybrid-tiny": lambda: _bundled("hybrid-tiny"),
          "hybrid-tiny-2": lambda: _bundled("hybrid-tiny-2"), "bamba": _bamba, "falcon_h1": _falcon_h1}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request, one_torch_thread):
    return MODELS[request.param]().eval()


def _mixers(model):
    return [m for m in model.modules() if hasattr(m, "in_proj") and hasattr(m, "conv1d")]


def test_every_mixer_is_found_and_blocks_tile_the_rows(model):
    blocks = fused_row_blocks(model)
    params = dict(model.named_parameters())
    in_projs = [n for n in blocks if n.endswith("in_proj.weight")]
    assert len(in_projs) == len(_mixers(model)) > 0
    for name, parts in blocks.items():
        assert sum(size for _, size in parts) == params[name].shape[0], name
        assert all(size > 0 for _, size in parts)
    for name in in_projs:
        assert [b for b, _ in blocks[name]] == ["z", "x", "B", "C", "dt"]
    mixer = _mixers(model)[0]  # the sizes are those the mixer itself was built with
    z, x, b, c, dt = (size for _, size in blocks[in_projs[0]])
    assert (z, x, b + c + x, dt) == (mixer.intermediate_size, mixer.intermediate_size, mixer.conv_dim, mixer.num_heads)


def test_zamba2_gate_up_and_its_adapters_are_listed():
    model = _bundled("hybrid-tiny-2")
    blocks = fused_row_blocks(model)
    gate_up = [n for n in blocks if "gate_up_proj" in n]
    assert any(n.endswith(".gate_up_proj.weight") for n in gate_up)
    assert any("adapter_list" in n for n in gate_up)
    size = model.config.intermediate_size
    assert all(blocks[n] == [("gate", size), ("up", size)] for n in gate_up)


def _perturbed_effects(model, mixer, rows, monkeypatch):
    """Which of the mixer's inner signals change when ``rows`` of its in_proj weight are perturbed: the conv1d
    input per channel (x, B, C live there), the time step given to the scan (dt) and the gated norm's gate (z).
    The modeling module's own conv and scan functions are wrapped to record what this mixer passes them."""
    import sys

    module = sys.modules[type(mixer).__module__]
    seen, inside = {}, []

    def recording(fn, key, index):
        def wrapper(*args, **kwargs):
            if inside:
                seen[key] = args[index].detach().clone()
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(module, "causal_conv1d_fn", recording(module.causal_conv1d_fn, "conv", 0))
    monkeypatch.setattr(module, "mamba2_chunk_scan", recording(module.mamba2_chunk_scan, "dt", 1))
    handles = [mixer.register_forward_pre_hook(lambda m, a: inside.append(1)),
               mixer.register_forward_hook(lambda m, a, o: inside.clear()),
               mixer.norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("gate", a[1].detach().clone()))]
    ids = torch.randint(1, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            base_out = model(input_ids=ids).logits
            base = dict(seen)
            weight = mixer.in_proj.weight
            saved = weight[rows].clone()
            weight[rows] += 0.5 * torch.randn_like(saved)
            out = model(input_ids=ids).logits
            weight[rows] = saved
    finally:
        for h in handles:
            h.remove()
    assert base.keys() == {"conv", "dt", "gate"}, "the mixer no longer calls what this test wraps"
    conv_changed = (seen["conv"] - base["conv"]).abs().amax(dim=(0, 2)) > 1e-6  # per channel (conv input: B, C, T)
    changed = {key: bool((seen[key] - base[key]).abs().max() > 1e-6) for key in ("dt", "gate")}
    return conv_changed, changed, bool((out - base_out).abs().max() > 1e-6)


def test_each_in_proj_block_feeds_the_signal_named_after_it(model, monkeypatch):
    """Perturbing a block's rows moves only that block's signal: z only the norm's gate, x/B/C only their channels
    of the conv1d input, dt only the scan's time step; and each moves the output."""
    mixer = _mixers(model)[0]
    name = next(n for n, m in model.named_modules() if m is mixer) + ".in_proj.weight"
    blocks = fused_row_blocks(model)[name]
    start, spans = 0, {}
    for block, size in blocks:
        spans[block] = (start, start + size)
        start += size
    intermediate, bc = blocks[0][1], blocks[2][1]
    channels = {"x": (0, intermediate), "B": (intermediate, intermediate + bc),
                "C": (intermediate + bc, intermediate + 2 * bc)}
    for block, (lo, hi) in spans.items():
        conv_changed, changed, out_changed = _perturbed_effects(model, mixer, slice(lo, hi), monkeypatch)
        assert out_changed, block
        assert changed == {"gate": block == "z", "dt": block == "dt"}, block
        expected = torch.zeros_like(conv_changed)
        if block in channels:
            expected[slice(*channels[block])] = True
        assert torch.equal(conv_changed, expected), block


def test_gate_up_blocks_match_the_mlp_split():
    """Perturbing the "gate" rows changes the activation's input; the "up" rows leave it alone."""
    model = _bundled("hybrid-tiny").eval()
    name, blocks = next((n, b) for n, b in fused_row_blocks(model).items() if n.endswith(".gate_up_proj.weight"))
    mlp = model.get_submodule(name.rsplit(".", 2)[0])
    seen = {}
    handle = mlp.act_fn.register_forward_pre_hook(lambda m, args: seen.__setitem__("act", args[0].detach().clone()))
    ids = torch.randint(1, 64, (1, 8), generator=torch.Generator().manual_seed(0))
    gate = blocks[0][1]
    try:
        changed = {}
        with torch.no_grad():
            model(input_ids=ids)
            base = seen["act"]
            for block, rows in (("gate", slice(0, gate)), ("up", slice(gate, None))):
                saved = mlp.gate_up_proj.weight[rows].clone()
                mlp.gate_up_proj.weight[rows] += 0.5
                model(input_ids=ids)
                changed[block] = bool((seen["act"] - base).abs().max() > 1e-6)
                mlp.gate_up_proj.weight[rows] = saved
    finally:
        handle.remove()
    assert changed == {"gate": True, "up": False}


def test_mismatched_config_fails_in_one_line():
    from optimizers import MuonConfigError

    model = _bundled("mamba-tiny")
    model.config.num_heads += 1  # the config no longer describes the weights
    with pytest.raises(MuonConfigError, match="in_proj.weight: the config gives row blocks") as info:
        fused_row_blocks(model)
    assert "\n" not in str(info.value)


def _neox():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    return GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=64, max_position_embeddings=64)).eval()


def test_gpt_neox_qkv_blocks_are_the_rows_its_attention_reads_as_q_k_v():
    """query_key_value interleaves q, k, v per head: block i of the interleaved view (heads pieces, in order) must be
    the rows the forward turns into query / key / value states (captured before rotary embeddings)."""
    from optimizers.fused_blocks import fused_row_interleave

    model = _neox()
    name = "gpt_neox.layers.0.attention.query_key_value.weight"
    blocks, interleave = fused_row_blocks(model), fused_row_interleave(model)
    assert blocks[name] == [("q", 32), ("k", 32), ("v", 32)] and interleave[name] == 4
    attention = model.gpt_neox.layers[0].attention
    x = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # what the forward does: view (..., heads, 3*head_size), transpose, chunk(3)
        qkv = attention.query_key_value(x).view(1, 5, -1, 3 * attention.head_size).transpose(1, 2)
        states = qkv.chunk(3, dim=-1)  # each (1, heads, 5, head_size)
        W, b = attention.query_key_value.weight, attention.query_key_value.bias
        pieces = zip(W.view(4, -1, 32).split([8, 8, 8], dim=1), b.view(4, -1).split([8, 8, 8], dim=1))
        for (w, bias), state in zip(pieces, states):
            ours = x @ w.reshape(-1, 32).T + bias.reshape(-1)  # (1, 5, 32): heads x head_size, head-major
            torch.testing.assert_close(ours.view(1, 5, 4, 8).transpose(1, 2), state)
