"""Every named size builds with consistent shapes and the target parameter count (on the meta device), and the
tiny sizes train, save, reload and generate as plain transformers models."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from configs.model_configs import MODEL_CONFIGS, ConfigError
from configs.model_sizes import TOKENIZER_VOCAB_SIZES, VOCAB_MULTIPLE
from mamba_trainer.errors import UserError
from mamba_trainer.models import (build_config, build_model, count_parameters, describe_kernels, kernel_info,
                                  kernel_report, load_pretrained)

TINY = [name for name in MODEL_CONFIGS if "-tiny" in name]
VOCAB = 1024  # the bundled tokenizer
IDS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def meta_model(name):
    entry = MODEL_CONFIGS[name]
    with torch.device("meta"):
        return build_model(name, TOKENIZER_VOCAB_SIZES[entry["tokenizer"]])


# ---- every size, on the meta device ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
def test_parameter_count_matches_target(name):
    model = meta_model(name)
    target = MODEL_CONFIGS[name]["params"]
    count = count_parameters(model)
    assert abs(count / target - 1) <= 0.05, f"{name}: {count:,} parameters vs target {target:,}"


@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
def test_shapes_are_consistent(name):
    config = meta_model(name).config
    assert config.vocab_size % VOCAB_MULTIPLE == 0 and config.vocab_size >= TOKENIZER_VOCAB_SIZES[MODEL_CONFIGS[name]["tokenizer"]]
    assert config.model_type == MODEL_CONFIGS[name]["architecture"]
    assert config.tie_word_embeddings and config.use_cache is False
    if config.model_type == "mamba2":
        assert config.num_heads * config.head_dim == config.expand * config.hidden_size
        assert config.head_dim == 64 and config.num_heads % config.n_groups == 0
    else:
        assert config.mamba_headdim == 64 and config.mamba_expand * config.hidden_size == config.n_mamba_heads * 64
        assert len(config.layers_block_type) == config.num_hidden_layers
        assert config.layers_block_type.count("hybrid") >= config.num_mem_blocks
        assert config.attention_head_dim * config.num_attention_heads == 2 * config.hidden_size
        assert config.use_mem_rope


@pytest.mark.parametrize("name", ["hybrid-small", "hybrid-tiny-2"])
def test_attention_blocks_are_shared_across_depth(name):
    model = meta_model(name)
    blocks = [layer.shared_transformer for layer in model.model.layers if hasattr(layer, "shared_transformer")]
    k = model.config.num_mem_blocks
    assert len(blocks) > k
    for i, block in enumerate(blocks):
        source = blocks[i % k]
        assert block.self_attn.q_proj.weight is source.self_attn.q_proj.weight
        assert block.feed_forward.down_proj.weight is source.feed_forward.down_proj.weight
    if k > 1:
        assert blocks[0].self_attn.q_proj.weight is not blocks[1].self_attn.q_proj.weight
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_vocab_is_padded():
    assert build_config("hybrid-small", 50_277).vocab_size == 50_304
    assert build_config("mamba-tiny", 1024).vocab_size == 1024
    assert build_config("mamba-tiny", 1000).vocab_size == 1024


def test_token_ids_replace_architecture_defaults():
    config = build_config("hybrid-tiny", VOCAB, pad_token_id=3, eos_token_id=4)
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (3, None, 4)


@pytest.mark.parametrize("size,kwargs,expected", [
    ("hybrid-tiny", {"hidden_sise": 256}, "did you mean 'hidden_size'"),
    ("hybrid-tiny", {"n_mamba_heads": 5}, "n_mamba_heads"),
    ("hybrid-tiny", {"num_attention_heads": 5}, "num_attention_heads"),
    ("hybrid-tiny", {"num_hidden_layers": 8}, "layers_block_type has 6 entries"),
    ("hybrid-tiny-2", {"num_key_value_heads": 2}, "use_shared_attention_adapter"),
    ("mamba-tiny", {"num_heads": 5}, "num_heads"),
    ("mamba-tiny", {"n_groups": 4}, "n_groups"),
    ("mamba-tiny", {"hidden_size": "wide"}, "mamba-tiny"),
    ("hybrid-huge", {}, "valid model sizes"),
])
def test_bad_config_is_one_line_error(size, kwargs, expected):
    with pytest.raises(ConfigError) as info:
        build_config(size, VOCAB, **kwargs)
    assert expected in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs", [dict(vocab_size=0), dict(vocab_size=VOCAB, eos_token_id=VOCAB)])
def test_bad_vocab_or_token_id(kwargs):
    with pytest.raises(ConfigError):
        build_config("mamba-tiny", **kwargs)


# ---- tiny sizes, for real ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=TINY)
def tiny(request):
    return request.param, build_model(request.param, VOCAB, seed=0, **IDS)


def test_same_seed_same_weights(tiny):
    name, model = tiny
    again = build_model(name, VOCAB, seed=0, **IDS)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert 1e6 <= count_parameters(model) == count_parameters(model, trainable_only=True) <= 5e6


def test_forward_backward(tiny):
    _, model = tiny
    model.train()
    x = torch.randint(3, VOCAB, (2, 40), generator=torch.Generator().manual_seed(0))  # 40: not a chunk multiple
    loss = model(input_ids=x, labels=x).loss
    assert math.isfinite(loss.item()) and abs(loss.item() - math.log(VOCAB)) < 1.0  # ~uniform at init
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [n for n, g in grads.items() if g is None]
    model.zero_grad(set_to_none=True)


def test_save_load_generate(tiny, tmp_path):
    name, model = tiny
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model) and loaded.generation_config.use_cache is True
    x = torch.randint(3, VOCAB, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, loaded(input_ids=x).logits)
    assert type(load_pretrained(tmp_path)) is type(model)

    prompt = x[:1, :7]
    out = loaded.generate(prompt, max_new_tokens=4, do_sample=False, eos_token_id=None)
    assert out.shape == (1, 11) and torch.equal(out[:, :7], prompt)
    with torch.no_grad():  # the cached (recurrent) decode must match recomputing the whole prefix
        seq = prompt
        for _ in range(4):
            seq = torch.cat([seq, loaded(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)


# ---- kernels and checkpoints ------------------------------------------------------------------------------------
def test_kernel_report_is_one_line():
    report = kernel_report()
    assert report.startswith("kernels:") and "\n" not in report
    info = kernel_info()
    if not torch.cuda.is_available():
        assert not info["fused"] and "PyTorch path" in report


@pytest.mark.parametrize("info,expected", [
    (dict(mamba_ssm="2.2.4", causal_conv1d="1.5.0", mambapy=None, cuda=True, fused=True),
     "mamba-ssm 2.2.4 CUDA kernels + causal-conv1d 1.5.0"),
    (dict(mamba_ssm="2.2.4", causal_conv1d=None, mambapy="1.2.0", cuda=True, fused=True),
     "PyTorch conv1d (causal-conv1d not installed)"),
    (dict(mamba_ssm="!ImportError", causal_conv1d=None, mambapy=None, cuda=True, fused=False),
     "installed but fails to import (ImportError)"),
    (dict(mamba_ssm=None, causal_conv1d=None, mambapy="1.2.0", cuda=False, fused=False),
     "PyTorch path (CUDA: no; mamba-ssm: not installed"),
])
def test_describe_kernels(info, expected):
    assert expected in describe_kernels(info) and "\n" not in describe_kernels(info)


def test_load_pretrained_missing_local_path(tmp_path, monkeypatch):
    with pytest.raises(UserError) as info:
        load_pretrained(tmp_path / "no_such_run" / "final")
    assert "no_such_run" in str(info.value) and "does not exist" in str(info.value)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(UserError, match="does not exist"):  # shaped like a hub id, but checkpoints/ is local
        load_pretrained("checkpoints/run")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load_pretrained(tmp_path / "empty")


def test_load_pretrained_unreachable_hub_id():
    with pytest.raises(UserError) as info:
        load_pretrained("state-spaces/no-such-mamba2", local_files_only=True)  # no network access in tests
    message = str(info.value)
    assert "state-spaces/no-such-mamba2" in message and "--model_name_or_path" in message and "\n" not in message
