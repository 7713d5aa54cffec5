"""bench/packing.py's pure parts: scores from a run folder (padding, content tokens/s) and the summary table."""

import json
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="module")
def pk(bench_script):
    return bench_script("packing")


def test_score_reads_padding_and_throughput_once(pk, tmp_path, monkeypatch):
    run = tmp_path / "muon_bfd_lr0.02_seed0"
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    (run / "final" / "model.safetensors").write_text("weights")
    (run / "run_config.json").write_text(json.dumps({"data": {
        "tokens": {"train": {"tokens": 950, "padding_tokens": 50}}, "counts": {"train_sequences": 4}}}))
    rates = [{"step": s, "loss": 1.0, "tokens_per_second": t} for s, t in ((1, 10.0), (2, 200.0), (3, 100.0), (4, 300.0))]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rates))
    monkeypatch.setattr(pk, "leak_free_eval_loss", lambda *a: 1.25)
    monkeypatch.setattr(pk, "answer_accuracy", lambda *a: 0.5)
    cfg = SimpleNamespace(seq_len=250, eval_examples=8, eval_problems=4)
    scores = pk.score(run, cfg, 0)
    assert scores["padding_fraction"] == pytest.approx(50 / 1000)
    assert scores["tokens_per_second"] == 200.0  # the median, the first (start-up) interval left out
    assert scores["content_tokens_per_second"] == 200.0  # mamba-train logs non-padding tokens: not discounted twice
    assert not (run / "final" / "model.safetensors").exists()  # weights pruned once scored
    monkeypatch.setattr(pk, "leak_free_eval_loss", lambda *a: pytest.fail("scored twice"))
    assert pk.score(run, cfg, 0) == scores


def test_summary_has_a_row_per_size_and_mode_with_the_seed_spread(pk):
    rows = [{"size": "hybrid-tiny", "mode": m, "seed": s, "final_eval_loss": 1.0 + s, "leak_free_eval_loss": 2.0 + s,
             "accuracy": 0.1, "tokens_per_second": 100.0, "padding_fraction": 0.02}
            for m in ("bfd", "stream") for s in (0, 1)]
    table = pk.summarize(rows).splitlines()
    assert len(table) == 4 and table[2].startswith("| hybrid-tiny | stream | 2.5000 ± 0.7071")
    assert table[3].startswith("| hybrid-tiny | bfd |") and "(2 seeds)" in table[3]
