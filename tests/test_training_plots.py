"""plots/training.png from metrics.jsonl, and a real tiny run with --report_to tensorboard."""

import json
from pathlib import Path

import pytest

from mamba_trainer.training_plot import PLOT_FILE, plot_training, read_metrics, series


def _write(run: Path, records):
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 9, "lo')


def test_plot_reads_metrics_and_writes_one_png(tmp_path):
    run = tmp_path / "run"
    _write(run, [{"step": s, "loss": 5.0 / s, "lr_muon": 1e-2, "lr_adamw": 1e-3, "momentum": 0.95,
                  "tokens_per_second": 100.0 + s} for s in range(1, 5)]
           + [{"step": 4, "eval_loss": 1.5, "eval_answer_accuracy": 0.25}, {"step": 4, "event": "end"}])
    records = read_metrics(run)
    assert len(records) == 6  # the torn last line is skipped
    assert series(records, "eval_loss") == ([4], [1.5])
    out = plot_training(run)
    assert out == run / PLOT_FILE and out.is_file()
    import matplotlib.image

    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > image.shape[1]  # four stacked panels (accuracy included)
    assert not list(out.parent.glob("*.tmp.png"))


def test_no_plot_before_any_loss(tmp_path):
    _write(tmp_path / "run", [{"step": 0, "event": "start"}])
    assert plot_training(tmp_path / "run") is None
    assert not (tmp_path / "run" / PLOT_FILE).exists()


@pytest.mark.integration
def test_tiny_run_writes_the_plot_and_tensorboard_carries_the_optimizer_scalars(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mamba_trainer.train import main

    monkeypatch.chdir(tmp_path)
    code = main(["--training_preset", "muon_smoke", "--model_size", "hybrid-tiny", "--max_steps", "2",
                 "--logging_steps", "1", "--save_steps", "2", "--eval_steps", "2", "--max_train_examples", "64",
                 "--max_eval_examples", "8", "--report_to", "tensorboard", "--output_dir", "checkpoints/run"])
    assert code == 0
    run = tmp_path / "checkpoints" / "run"
    assert (run / PLOT_FILE).is_file()
    events = sorted(tmp_path.rglob("events.out.tfevents*"))
    assert events, "no tensorboard event file"
    tags = set()
    for event in events:
        acc = EventAccumulator(str(event))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    for key in ("lr_muon", "lr_adamw", "momentum", "tokens_per_second"):
        assert any(t.split("/")[-1] == key for t in tags), f"{key} not in {sorted(tags)}"


@pytest.mark.integration  # runs train_background.sh
def test_background_status_names_the_plot(tmp_path):
    import os
    import subprocess

    run = tmp_path / "run"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "r1.log").write_text(f"run folder: {run} (new)\nstep 1/2 | loss 1.0\n")
    (tmp_path / "logs" / "r1.pid").write_text("")
    script = Path(__file__).parent.parent / "train_background.sh"
    env = {**os.environ, "LOG_DIR": str(tmp_path / "logs")}

    def status():
        return subprocess.run(["bash", str(script), "--status", "r1"], env=env, capture_output=True, text=True,
                              timeout=30).stdout

    assert f"plot: {run}/plots/training.png (written when the run ends)" in status()
    _write(run, [{"step": 1, "loss": 1.0}])
    plot_training(run)
    assert f"plot: {run}/plots/training.png\n" in status()
