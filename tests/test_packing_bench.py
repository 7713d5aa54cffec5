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


def test_the_report_reads_every_finished_scored_run_folder(pk, tmp_path, monkeypatch):
    """--report builds its rows from the run folders, not from one instance's results.json: runs made by two
    instances (one per size) all count; a run still going, or finished but not yet scored, does not."""
    cfg = pk.parse(["--out", str(tmp_path), "--seeds", "2", "--modes", "stream,bfd"])
    status = {}
    for size, mode, seed, state in (("hybrid-tiny", "bfd", 0, "scored"), ("mamba-tiny", "bfd", 1, "scored"),
                                     ("mamba-tiny", "stream", 0, "running"), ("hybrid-tiny", "stream", 1, "unscored")):
        run = tmp_path / size / f"muon_{mode}_lr{cfg.lr:g}_seed{seed}"
        run.mkdir(parents=True)
        records = [{"step": 400, "elapsed_s": 9.0, "eval_loss": 0.5 + seed, "eval_runtime": 1.0},
                   {"step": 400, "event": "end", "reason": "completed"}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        if state == "scored":
            (run / pk.SCORES).write_text(json.dumps({"leak_free_eval_loss": 0.25, "accuracy": 0.1,
                                                     "tokens_per_second": 9.0, "padding_fraction": 0.02}))
        status[run] = state != "running"
    monkeypatch.setattr(pk.convergence, "is_complete", lambda run_dir: status.get(run_dir, False))
    assert pk.main(["--report", "--out", str(tmp_path), "--seeds", "2", "--modes", "stream,bfd"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(r["size"], r["mode"], r["seed"], r["final_eval_loss"]) for r in rows] == [
        ("hybrid-tiny", "bfd", 0, 0.5), ("mamba-tiny", "bfd", 1, 1.5)]
    summary = (tmp_path / "summary.md").read_text()
    assert "| hybrid-tiny | bfd | 0.2500 |" in summary and "| mamba-tiny | bfd |" in summary
