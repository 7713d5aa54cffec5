"""bench/weights_step_cost.py: the side-by-side step timing of saved models (structure and bad input; no timings)."""

import pytest


@pytest.fixture(scope="module")
def bench(bench_script):
    return bench_script("weights_step_cost")


def test_two_saved_models_one_row_each_first_is_the_reference(bench, tmp_path, capsys):
    import torch
    from transformers import Mamba2Config, Mamba2ForCausalLM

    torch.manual_seed(0)
    config = Mamba2Config(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_heads=4, head_dim=16, state_size=8,
                          expand=2, n_groups=1, chunk_size=8)
    small = Mamba2ForCausalLM(config)
    small.save_pretrained(tmp_path / "a")
    Mamba2ForCausalLM(config).save_pretrained(tmp_path / "b")
    assert bench.main([str(tmp_path / "a"), str(tmp_path / "b"), "--batch", "2", "--seq_len", "16", "--rounds", "1",
                       "--threads", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {tmp_path}")]
    assert [r.split(" | ")[0][2:] for r in rows] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert rows[0].split(" | ")[2] == "1.00"  # the first model is the reference of the "vs first" columns


def test_a_folder_without_a_model_is_one_line(bench, tmp_path, capsys):
    assert bench.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no saved model there" in err
