"""The fine-tune path end to end, on hybrid-tiny and the fixtures (CPU, about a minute):

prepare_cot_dataset.py (MathInstruct fixture -> save_to_disk) -> train on it (muon_smoke, with the training-time
answer accuracy on 4 problems) -> fine-tune its final/ on the GSM8K fixture -> mamba-eval both: greedy, maj@3,
sampled maj@1, and 2-member ensembles. The numbers of a few-step model are near zero; what is checked is that
files exist and that the metrics agree with each other.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from mamba_trainer import evaluate as ev
from mamba_trainer.train import main as train_main

pytestmark = pytest.mark.integration  # every test reads the trained and fine-tuned runs

REPO = Path(__file__).resolve().parents[1]
COT_FIXTURE = REPO / "tests" / "fixtures" / "cot" / "mathinstruct.json"
GSM8K_SAMPLE = REPO / "tests" / "fixtures" / "data" / "gsm8k_sample.jsonl"
SMOKE = ["--training_preset", "muon_smoke", "--model_size", "hybrid-tiny", "--logging_steps", "1", "--seed", "5"]
LIMIT = 4
EVAL = ["--limit", str(LIMIT), "--max_new_tokens", "24", "--progress", "false"]


def _prepare_cot(argv):
    spec = importlib.util.spec_from_file_location("prepare_cot_dataset", REPO / "prepare_cot_dataset.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up while building the class
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name].main(argv)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(base run, fine-tuned run): CoT data prepared, trained 6 steps, fine-tuned 2 steps on GSM8K-style data."""
    root = tmp_path_factory.mktemp("finetune_path")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert _prepare_cot(["--data_files", str(COT_FIXTURE), "--output", "data/cot"]) == 0
        assert (root / "data" / "cot" / "stats.json").is_file()
        assert train_main([*SMOKE, "--data_dir", "data/cot", "--max_steps", "6", "--eval_steps", "3", "--save_steps", "6",
                           "--gsm8k_eval_samples", "4", "--output_dir", "checkpoints/base"]) == 0
        assert train_main([*SMOKE, "--data_dir", str(GSM8K_SAMPLE), "--max_steps", "2", "--eval_steps", "2",
                           "--save_steps", "2", "--resume", "checkpoints/base/final", "--output_dir", "checkpoints/ft"]) == 0
    return root / "checkpoints" / "base", root / "checkpoints" / "ft"


def test_finetune_starts_from_the_parents_final_with_a_fresh_schedule(runs):
    from safetensors.torch import load_file

    base, ft = runs
    config = json.loads((ft / "run_config.json").read_text())
    assert config["parent_run"] == "checkpoints/base" and config["model"]["model_size"] == "hybrid-tiny"
    state = json.loads((ft / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2  # a fresh schedule, not the parent's step count
    parent, child = load_file(base / "final" / "model.safetensors"), load_file(ft / "final" / "model.safetensors")
    assert parent.keys() == child.keys() and any(not (parent[k] == child[k]).all() for k in parent)


def evaluate(*argv) -> dict:
    """Run mamba-eval in-process and return the results document it wrote."""
    argv = [str(a) for a in argv]
    assert ev.main(argv) == 0
    output = Path(argv[argv.index("--output") + 1])
    return json.loads(output.read_text())


def generations(doc, member=0):
    return [p["members"][member]["generations"] for p in doc["problems"]]


def metric_keys(summary):
    return {k: summary[k] for k in ("n", "strict", "flexible", "pass@1_strict", "pass@1_flexible")}


def test_training_logs_answer_accuracy_at_each_eval(runs):
    base, ft = runs
    lines = [json.loads(x) for x in (base / "metrics.jsonl").read_text().splitlines() if x.strip()]
    evals = [m for m in lines if "eval_gsm8k_strict" in m]
    assert [m["step"] for m in evals] == [3, 6]
    assert [m["step"] for m in lines if "eval_loss" in m] == [3, 6]  # logged next to the eval loss, same steps
    for m in evals:
        assert 0 <= m["eval_gsm8k_strict"] <= m["eval_gsm8k_flexible"] <= 1
    config = json.loads((ft / "run_config.json").read_text())
    assert config["parent_model"].endswith("base/final") and (ft / "final" / "config.json").is_file()
    assert not any("eval_gsm8k_strict" in x for x in (ft / "metrics.jsonl").read_text().splitlines())  # off by default


def test_greedy_is_deterministic_and_consistent(runs, tmp_path):
    _, ft = runs
    first = evaluate("--model", ft, "--data_dir", GSM8K_SAMPLE, *EVAL, "--output", tmp_path / "a.json")
    second = evaluate("--model", ft / "final", "--data_dir", GSM8K_SAMPLE, *EVAL, "--output", tmp_path / "b.json")
    assert generations(first) == generations(second)
    assert first["summary"]["models"][0]["strict"] == second["summary"]["models"][0]["strict"]
    summary = first["summary"]["models"][0]
    assert summary["n"] == len(first["problems"]) == LIMIT and first["settings"]["template_sources"] == ["run_config.json"]
    assert summary["strict"] <= summary["flexible"] and summary["strict"] == summary["pass@1_strict"]
    assert all(len(g) == 1 for g in generations(first))


def test_default_output_lands_in_the_run_folder(runs, capsys):
    base, _ = runs
    assert ev.main(["--model", str(base), "--dataset", "bundled-math", "--split", "test", *EVAL]) == 0
    path = base / "eval" / "bundled-math_test.json"
    assert path.is_file() and str(path) in capsys.readouterr().out
    assert json.loads(path.read_text())["summary"]["models"][0]["n"] == LIMIT


def test_maj_at_k_and_pass_at_1_from_the_same_samples(runs, tmp_path):
    _, ft = runs
    doc = evaluate("--model", ft, "--data_dir", GSM8K_SAMPLE, *EVAL, "--samples", 3, "--temperature", 0.9,
                   "--seed", 11, "--output", tmp_path / "maj3.json")
    summary = doc["summary"]["models"][0]
    assert summary["maj@3_strict"] == summary["strict"] and summary["n"] == LIMIT
    assert all(len(g) == 3 for g in generations(doc))
    for p in doc["problems"]:
        m = p["members"][0]
        assert m["pass@1_strict"] == sum(m["correct_strict"]) / 3 and m["pass@1_strict"] <= m["pass@1_flexible"]
        assert sum(m["votes_strict"].values()) == sum(a is not None for a in m["strict"])
    mean = sum(p["members"][0]["pass@1_strict"] for p in doc["problems"]) / LIMIT
    assert summary["pass@1_strict"] == pytest.approx(mean) and summary["pass@1_strict"] <= summary["pass@1_flexible"]
    again = evaluate("--model", ft, "--data_dir", GSM8K_SAMPLE, *EVAL, "--samples", 3, "--temperature", 0.9,
                     "--seed", 11, "--output", tmp_path / "maj3b.json")
    assert generations(again) == generations(doc)  # seeded


def test_maj_at_1_with_sampling_equals_its_pass_at_1(runs, tmp_path):
    base, _ = runs
    doc = evaluate("--model", base, "--dataset", "bundled-math", *EVAL, "--samples", 1, "--temperature", 1.0,
                   "--output", tmp_path / "maj1.json")
    summary = doc["summary"]["models"][0]
    assert summary["strict"] == summary["pass@1_strict"] and summary["flexible"] == summary["pass@1_flexible"]
    assert doc["settings"]["decoding"].startswith("sample")


@pytest.mark.parametrize("sampling", [[], ["--samples", 3, "--temperature", 0.9]], ids=["greedy", "maj3"])
def test_ensemble_of_two_identical_members_equals_the_member(runs, tmp_path, sampling):
    _, ft = runs
    doc = evaluate("--model", ft, ft / "final", "--ensemble", "vote", "--data_dir", GSM8K_SAMPLE, *EVAL, *sampling,
                   "--output", tmp_path / "ens.json")
    member, other, ensemble = doc["summary"]["models"][0], doc["summary"]["models"][1], doc["summary"]["ensemble"]
    assert metric_keys(member) == metric_keys(other) == metric_keys(ensemble)
    for p in doc["problems"]:
        mine, theirs = p["members"][0], p["ensemble"]
        assert theirs["vote_strict"]["answer"] == mine["vote_strict"]["answer"]
        assert theirs["votes_strict"] == {k: 2 * v for k, v in mine["votes_strict"].items()}


def test_ensemble_of_base_and_finetuned(runs, tmp_path, capsys):
    base, ft = runs
    doc = evaluate("--model", base, ft, "--ensemble", "vote", "--data_dir", GSM8K_SAMPLE, *EVAL,
                   "--output", tmp_path / "mix.json")
    table = capsys.readouterr().out
    assert "ensemble (vote, 2 models)" in table and str(base) in table and str(ft) in table
    assert doc["settings"]["models"] == [str(base), str(ft)] and doc["summary"]["ensemble"]["n"] == LIMIT
    for p in doc["problems"]:
        strict = [a for m in p["members"] for a in m["strict"]]
        assert sum(p["ensemble"]["votes_strict"].values()) == sum(a is not None for a in strict)
        assert p["ensemble"]["strict"] == strict


def test_batched_greedy_equals_one_at_a_time_on_the_trained_model(runs):
    from mamba_trainer.data import load_eval_problems
    from mamba_trainer.generation import GenerationSettings, build_prompt, generate_answers
    from mamba_trainer.models import load_pretrained
    from mamba_trainer.tokenizer import load_tokenizer

    _, ft = runs
    model, tok = load_pretrained(ft / "final").eval(), load_tokenizer(str(ft / "final"), padding_side="left")
    spec = ev.resolve_model(str(ft))
    prompts = [build_prompt(spec.prompt_template, p["question"])
               for p in load_eval_problems(None, "test", data_dir=str(GSM8K_SAMPLE), limit=6)]
    batched = generate_answers(model, tok, prompts, GenerationSettings(max_new_tokens=20, batch_size=6))
    alone = generate_answers(model, tok, prompts, GenerationSettings(max_new_tokens=20, batch_size=1))
    assert batched == alone
