"""mamba_trainer.run_settings: a run folder compared with the run a command would make now, for commands that are
and are not that run.

The folder is the one ``mamba-train`` writes before its first step (run_config.json, optimizer.json: all that
``recorded_settings`` reads), made by the CLI itself, stopped where training would start. The end-to-end reuse of
finished runs: test_convergence_bench.py (one real bench run) and test_ablate.py (a real sweep)."""

import json
import shutil
from pathlib import Path

import pytest

from mamba_trainer import train as cli
from mamba_trainer.run_settings import first_difference, recorded_settings, settings_of
from mamba_trainer.train import main

FLAGS = ["--training_preset", "muon_smoke", "--model_size", "mamba-tiny", "--max_steps", "1", "--save_strategy", "no",
         "--eval_strategy", "no", "--logging_steps", "1", "--max_train_examples", "32", "--max_eval_examples", "4",
         "--seed", "3"]


class TrainingWouldStart(Exception):
    pass


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("settings")

    def stop(trainer, resolved, callbacks):
        assert trainer.state.global_step == 0
        raise TrainingWouldStart

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setattr(cli, "train_to_outcome", stop)
        with pytest.raises(TrainingWouldStart):
            main([*FLAGS, "--output_dir", "run"])
    assert {"run_config.json", "optimizer.json"} <= {p.name for p in (root / "run").iterdir()}
    return root / "run"


def test_the_command_that_made_a_run_is_the_same_run(run):
    recorded = recorded_settings(run)
    assert recorded["muon"]["fused_blocks"] == "per_block_dt_adamw"  # "auto", as optimizer.json says it ran
    assert first_difference(recorded, settings_of(FLAGS, run)) is None


def test_flags_that_spell_the_same_run_another_way_are_the_same(run, tmp_path):
    moved = tmp_path / "renamed"  # a folder relabelled: where a run is is not what it computes
    shutil.copytree(run, moved)
    assert first_difference(recorded_settings(moved), settings_of([*FLAGS, "--fused_blocks", "per_block_dt_adamw"],
                                                                  moved)) is None


@pytest.mark.parametrize("extra, expected", [
    (["--fused_blocks", "whole"], ("muon.fused_blocks", "per_block_dt_adamw", "whole")),
    (["--muon_beta2", "0.95"], ("muon.fused_blocks", "per_block_dt_adamw", "whole")),  # NorMuon: auto is whole
    (["--ns_steps", "3"], ("muon.ns_steps", None, 3)),
    (["--max_steps", "2"], ("training.max_steps", 1, 2)),
    (["--max_train_examples", "64"], ("data.max_train_examples", 32, 64)),
    (["--model_size", "hybrid-tiny"], ("run.model_size", "mamba-tiny", "hybrid-tiny")),
])
def test_another_run_is_named_by_its_first_different_setting(run, extra, expected):
    assert first_difference(recorded_settings(run), settings_of([*FLAGS, *extra], run)) == expected


def test_lrs_stated_at_a_width_are_the_run_whose_lrs_they_resolve_to(run):
    """--lr_width only says how the lrs were stated: a preset that gains one still reuses a run made at the lrs it
    resolves to (mamba-tiny is 192 wide), and one that moves the lrs is another run, named by the lr."""
    assert first_difference(recorded_settings(run), settings_of([*FLAGS, "--lr_width", "192"], run)) is None
    changed = first_difference(recorded_settings(run), settings_of([*FLAGS, "--lr_width", "96"], run))
    assert changed[0] == "muon.adamw_lr" and changed[2] < changed[1]  # AdamW's side falls with width


def test_a_run_made_under_another_default_differs_though_its_flags_do_not(run, tmp_path):
    """A Mamba2 run recorded with fused_blocks "whole" (the default before "auto") is not today's default run."""
    old = tmp_path / "old"
    shutil.copytree(run, old)
    config = json.loads((old / "run_config.json").read_text())
    config["muon"]["fused_blocks"] = "whole"
    (old / "run_config.json").write_text(json.dumps(config))
    assert first_difference(recorded_settings(old), settings_of(FLAGS, old)) == (
        "muon.fused_blocks", "whole", "per_block_dt_adamw")


def test_adamw_runs_ignore_muon_settings_and_unknown_folders_compare_as_same(run, tmp_path):
    recorded = recorded_settings(run)
    adamw = {**recorded, "run": {**recorded["run"], "optimizer_type": "adamw"}}
    now = settings_of([*FLAGS, "--optimizer", "adamw", "--ns_steps", "3"], run)
    assert first_difference(adamw, now) is None
    assert recorded_settings(tmp_path) is None and first_difference(None, now) is None
    (tmp_path / "run_config.json").write_text(json.dumps({"argv": []}))  # not mamba-train's
    assert recorded_settings(tmp_path) is None
