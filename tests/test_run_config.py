"""run_config.json through its one module (mamba_trainer.rundir.config): versioned, and folders written before the
version field existed (bench/results/*) still read; the one runner's folder judgements (mamba_trainer.runs)."""

import json
from pathlib import Path

import pytest

from mamba_trainer import runs
from mamba_trainer.rundir import SCHEMA_VERSION, RunConfig, loss_curves, read_run_config, write_run_config

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def test_a_file_without_a_version_is_version_1_and_reads_unchanged(tmp_path):
    old = {"model": {"model_size": "hybrid-tiny", "num_parameters": 7}, "optimizer_type": "muon",
           "muon": {"adamw_lr": 0.002}, "training_arguments": {"max_steps": 4}, "prompt_template": "Q: {prompt}"}
    (tmp_path / "run_config.json").write_text(json.dumps(old))
    cfg = RunConfig.read(tmp_path)
    assert cfg.version == 1 and not cfg.newer and cfg.raw == old
    assert (cfg.model_size, cfg.num_parameters, cfg.optimizer_type, cfg.adamw_lr) == ("hybrid-tiny", 7, "muon", 0.002)
    assert cfg.training_arguments["max_steps"] == 4 and cfg.prompt_template == "Q: {prompt}" and cfg.is_resumable
    write_run_config(tmp_path, read_run_config(tmp_path))  # what a resumed run does: read, add, write back
    written = json.loads((tmp_path / "run_config.json").read_text())
    assert written == {**old, "schema_version": SCHEMA_VERSION}
    again = RunConfig.read(tmp_path)
    assert again.version == SCHEMA_VERSION and again.raw == old


def test_a_version_2_file_reads_with_the_eval_packing_its_run_used(tmp_path):
    # before --eval_packing, the held-out rows were packed as the training rows: "same"; a new file keeps its own
    old = {"schema_version": 2, "data": {"packing": "stream", "max_seq_length": 256}, "optimizer_type": "muon"}
    (tmp_path / "run_config.json").write_text(json.dumps(old))
    cfg = RunConfig.read(tmp_path)
    assert cfg.version == 2 and cfg.data == {"packing": "stream", "max_seq_length": 256, "eval_packing": "same"}
    write_run_config(tmp_path, {"data": {"packing": "bfd", "eval_packing": "bfd"}})
    assert RunConfig.read(tmp_path).data["eval_packing"] == "bfd"
    (tmp_path / "run_config.json").write_text(json.dumps({"schema_version": 2, "argv": []}))
    assert "data" not in RunConfig.read(tmp_path).raw  # no section is made up


def test_missing_torn_and_foreign_files(tmp_path):
    assert RunConfig.load(tmp_path) is None and RunConfig.load(None) is None
    with pytest.raises(OSError):
        RunConfig.read(tmp_path)
    (tmp_path / "run_config.json").write_text("{torn")
    assert RunConfig.load(tmp_path) is None
    with pytest.raises(ValueError):
        RunConfig.read(tmp_path)
    (tmp_path / "run_config.json").write_text("[1]")
    assert RunConfig.load(tmp_path) is None
    (tmp_path / "run_config.json").write_text(json.dumps({"argv": [], "schema_version": SCHEMA_VERSION + 1}))
    cfg = RunConfig.read(tmp_path)
    assert cfg.newer and not cfg.is_resumable and cfg.model == {} and cfg.model_size is None
    assert cfg.to_json()["schema_version"] == SCHEMA_VERSION + 1  # never written back as an older version


@pytest.mark.parametrize("pattern", ["convergence_400/*/*/run_config.json",
                                     "lr_transfer/s300_b4/*/*/run_config.json",
                                     "ablation_seed003*/runs/*/run_config.json"])
def test_real_folders_written_before_the_version_read(pattern):
    paths = sorted(RESULTS.glob(pattern))
    if not paths:
        pytest.skip(f"no {pattern} in this checkout")
    for path in paths:
        cfg = RunConfig.load(path.parent)
        if cfg is None:  # a run being written right now by the background study
            continue
        assert 1 <= cfg.version <= SCHEMA_VERSION and cfg.model_size and cfg.optimizer_type in ("muon", "adamw")
        assert cfg.training_arguments.get("max_steps")
        assert cfg.data["eval_packing"] in ("same", "bfd", "none")  # upgraded: every reader sees the field


def test_one_curve_reader_gives_each_clock(tmp_path):
    records = [{"step": 0, "elapsed_s": 2.0, "eval_loss": 7.0, "eval_runtime": 2.0},
               {"step": 5, "elapsed_s": 12.0, "loss": 5.0},
               {"step": 5, "elapsed_s": 3.0, "loss": 4.0},  # resumed: the launch's clock starts again
               {"step": 10, "elapsed_s": 9.0, "eval_loss": 3.0, "eval_runtime": 1.0},
               {"step": 10, "event": "end", "reason": "completed"}]
    c = loss_curves(records)
    assert [(p.step, p.clock_s, p.loss) for p in c["train"]] == [(5, 12.0, 5.0), (5, 15.0, 4.0)]
    assert [(p.step, p.clock_s, p.train_s) for p in c["eval"]] == [(0, 2.0, 0.0), (10, 21.0, 6.0)]
    assert runs.eval_curve(records) == [(0, 0.0, 7.0), (10, 6.0, 3.0)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert loss_curves(tmp_path) == c


def test_folder_states_and_reuse(tmp_path):
    def run(name, records, final=False, config=True):
        d = tmp_path / name
        d.mkdir()
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        if config:
            (d / "run_config.json").write_text("{}")
        if final:
            (d / "final").mkdir()
            (d / "final" / "config.json").write_text("{}")
        return d

    end = {"step": 2, "event": "end"}
    done = run("done", [{**end, "reason": "completed"}], final=True)
    no_final = run("no_final", [{**end, "reason": "completed"}])
    diverged = run("div", [{**end, "reason": "diverged"}])
    stopped = run("stopped", [{**end, "reason": "stopped"}])
    cut = run("cut", [{"step": 1, "loss": 2.0}])
    assert [runs.folder_state(d) for d in (done, no_final, diverged, stopped, cut, tmp_path / "absent")] == [
        "completed", "completed", "diverged", "stopped", "incomplete", "new"]
    assert [runs.is_reusable(d) for d in (done, no_final, diverged, stopped, cut)] == [True, False, True, False, False]


class _Process:
    def __init__(self, polls, log):
        self.left, self.log = polls, log

    def poll(self):
        self.left -= 1
        return None if self.left > 0 else 0

    def send_signal(self, sig):
        self.log.append(("signal", sig))


def test_run_on_workers_runs_each_job_once_on_a_free_worker():
    events, done = [], []

    def start(job, worker):
        events.append((job, worker))
        return _Process(3, events)

    assert runs.run_on_workers(list(range(5)), ["a", "b"], start,
                               lambda job, worker, rc, s: done.append((job, worker, rc)), poll_s=0)
    assert events[:2] == [(0, "a"), (1, "b")] and sorted(j for j, _, _ in done) == list(range(5))
    assert all(rc == 0 for _, _, rc in done) and {w for _, w in events} <= {"a", "b"}
