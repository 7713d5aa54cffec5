"""Run folders: what --resume means for each kind of path, locking, and whole-or-nothing writes."""

import json

import pytest

from mamba_trainer import rundir
from mamba_trainer.errors import UserError


def write_whole_checkpoint(ckpt, step):
    """The files checkpoint_problem reads, each written whole (tiny, but in the Trainer's formats)."""
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2, 2)}, str(ckpt / "model.safetensors"))
    torch.save({"state": {}}, ckpt / "optimizer.pt")
    (ckpt / rundir.TRAINER_STATE).write_text(json.dumps({"global_step": step, "log_history": []}))


def make_run(root, name="run", steps=(3, 6), final=True, size="hybrid-tiny"):
    run = root / name
    run.mkdir(parents=True)
    rundir.write_json(run / rundir.RUN_CONFIG, {"model": {"model_size": size}, "optimizer_type": "muon"})
    for step in steps:
        ckpt = run / f"checkpoint-{step}"
        ckpt.mkdir()
        write_whole_checkpoint(ckpt, step)
    if final:
        (run / "final").mkdir()
        (run / "final" / "config.json").write_text("{}")
    return run


def test_resume_checkpoint_folder_continues(tmp_path):
    run = make_run(tmp_path)
    plan = rundir.resolve_resume(str(run / "checkpoint-3"), None, tmp_path)
    assert plan.mode == "continue" and plan.checkpoint == run / "checkpoint-3" and plan.run_dir == run


def test_resume_run_folder_takes_newest_whole_checkpoint(tmp_path):
    run = make_run(tmp_path, steps=(3, 6, 9))
    (run / "checkpoint-9" / rundir.TRAINER_STATE).unlink()  # cut short while saving
    plan = rundir.resolve_resume(str(run), None, tmp_path)
    assert plan.checkpoint == run / "checkpoint-6"
    assert (run / "checkpoint-9.incomplete").is_dir() and not (run / "checkpoint-9").exists()


def test_resume_latest_uses_output_dir_or_newest_run(tmp_path):
    old = make_run(tmp_path, "old")
    new = make_run(tmp_path, "new", steps=(2,))
    assert rundir.resolve_resume("latest", old, tmp_path).checkpoint == old / "checkpoint-6"
    assert rundir.resolve_resume("latest", None, tmp_path).run_dir == new


def test_resume_final_folder_is_a_finetune_with_parent(tmp_path):
    run = make_run(tmp_path)
    plan = rundir.resolve_resume(str(run / "final"), None, tmp_path)
    assert plan.mode == "finetune" and plan.model_path == run / "final" and plan.run_dir == run
    assert plan.parent_config["model"]["model_size"] == "hybrid-tiny"


@pytest.mark.parametrize("path, fragment", [("missing", "no such"), ("empty", "not a checkpoint")])
def test_bad_resume_paths_are_one_line(tmp_path, path, fragment):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as err:
        rundir.resolve_resume(str(tmp_path / path), None, tmp_path)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_resume_latest_with_nothing_to_resume(tmp_path):
    with pytest.raises(UserError, match="no run with a checkpoint"):
        rundir.resolve_resume("latest", None, tmp_path)


def test_lock_is_exclusive_and_released(tmp_path):
    import os

    assert rundir.running_pid(tmp_path) is None
    first = rundir.RunLock(tmp_path).acquire()
    assert rundir.running_pid(tmp_path) == str(os.getpid())
    with pytest.raises(UserError, match=f"in use by a running training \\(pid {os.getpid()}\\)"):
        rundir.RunLock(tmp_path).acquire()
    first.release()
    assert rundir.running_pid(tmp_path) is None
    rundir.RunLock(tmp_path).acquire().release()


def test_truncate_metrics_drops_lines_after_checkpoint(tmp_path):
    lines = [{"step": s, "loss": 1.0 / s} for s in range(1, 8)]
    (tmp_path / rundir.METRICS_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
    rundir.truncate_metrics(tmp_path, 4)
    kept = [json.loads(x)["step"] for x in (tmp_path / rundir.METRICS_FILE).read_text().splitlines()]
    assert kept == [1, 2, 3, 4]


def test_write_json_leaves_no_temp_files(tmp_path):
    rundir.write_json(tmp_path / "a.json", {"x": 1})
    rundir.write_json(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_default_run_names_never_collide(tmp_path):
    first = rundir.default_run_name("hybrid-tiny", "muon", tmp_path)
    (tmp_path / first).mkdir()
    second = rundir.default_run_name("hybrid-tiny", "muon", tmp_path)
    assert first != second and second.startswith("hybrid-tiny_muon_")
