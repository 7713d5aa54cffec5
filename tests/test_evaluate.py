"""mamba-eval: the pure pieces (prompts, batching, stopping, votes, metrics), the CLI's errors, and generation.

Generation tests use an untrained hybrid-tiny saved to a temporary folder (seconds on a CPU); the trained
end-to-end path is tests/test_finetune_path.py.
"""

import json
from pathlib import Path

import pytest
import torch

from mamba_trainer import evaluate as ev
from mamba_trainer import generation as gen
from mamba_trainer.data import PROMPT_TEMPLATE, load_eval_problems

FIXTURES = Path(__file__).parent / "fixtures"
GSM8K_SAMPLE = FIXTURES / "data" / "gsm8k_sample.jsonl"
# generation on hybrid-tiny is many tiny ops: one torch thread is several times faster than two on a busy CPU
pytestmark = pytest.mark.usefixtures("one_torch_thread")



# ---- prompts, batching, stopping ------------------------------------------------------------------------
def test_prompt_is_the_training_format():
    from mamba_trainer.data import format_example

    question = "Tom has 3 apples. How many?"
    assert gen.build_prompt(PROMPT_TEMPLATE, question) == format_example(question, "x")[0]
    assert gen.build_prompt("Q: {prompt}\nA:", "  hi  ") == "Q: hi\nA:"


@pytest.mark.parametrize("exact", [False, True])
def test_plan_batches_covers_every_index_once_longest_first(exact):
    lengths = [5, 9, 5, 7, 9, 9, 1, 5, 7]
    batches = gen.plan_batches(lengths, 2, exact_length=exact)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths))) and all(1 <= len(b) <= 2 for b in batches)
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    if exact:
        assert all(len({lengths[i] for i in b}) == 1 for b in batches)
    else:
        assert len(batches) == 5  # only the last batch is not full
    with pytest.raises(ValueError):
        gen.plan_batches(lengths, 0)


def test_left_pad_puts_padding_before_the_prompt():
    ids, mask = gen.left_pad([[1, 2], [3, 4, 5, 6], [7]], pad_token_id=9)
    assert ids.tolist() == [[9, 9, 1, 2], [3, 4, 5, 6], [9, 9, 9, 7]]
    assert mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]]
    assert ids.dtype == mask.dtype == torch.long


@pytest.mark.parametrize("text, stopped", [
    ("18 - 4 = 14 apples.\n#### 14\n", "18 - 4 = 14 apples.\n#### 14"),
    ("#### 1,250\nQuestion: Sam has", "#### 1,250"),
    ("#### 14", "#### 14"),  # no newline yet: not a stop, but nothing to cut either
    ("She has 5.\nQuestion: A farmer", "She has 5."),
    ("####\n3 + 4 = 7\n#### 7\nextra", "####\n3 + 4 = 7\n#### 7"),  # a "####" line without a number is no answer
])
def test_truncate_at_stop(text, stopped):
    assert gen.truncate_at_stop(text) == stopped


def test_stopping_criteria_is_per_sequence():
    from mamba_trainer.tokenizer import load_tokenizer

    tok = load_tokenizer("bundled", padding_side="left")
    prompt = tok("Question: x?\nAnswer: ", add_special_tokens=False)["input_ids"]
    outs = ["3 + 4 = 7\n#### 7\n", "3 + 4 = 7\n#### 7", "3 + 4 = 7\n", "a long line " * 12 + "\n#### 12\n"]
    seqs = [prompt + tok(o, add_special_tokens=False)["input_ids"] for o in outs]
    width = max(map(len, seqs))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(s)) + s for s in seqs])  # as generate's finished rows
    done = gen.AnswerStoppingCriteria(tok, prompt_width=len(prompt))(ids, None)
    assert done.dtype == torch.bool and done.tolist() == [True, False, False, True]


def test_batch_seed_differs_by_seed_and_batch():
    seeds = {gen.batch_seed(s, b) for s in range(3) for b in range(3)}
    assert len(seeds) == 9 and gen.batch_seed(1, 2) == gen.batch_seed(1, 2)


# ---- scoring -------------------------------------------------------------------------------------------
def test_gold_answer_reads_gsm8k_and_bare_numbers():
    problems = load_eval_problems(None, "test", data_dir=str(GSM8K_SAMPLE))
    golds = [ev.gold_answer(p["answer"]) for p in problems]
    assert golds[0] == "54" and golds[1] == "1825" and None not in golds
    assert ev.gold_answer("$1,000") == "1000" and ev.gold_answer("") is None


def test_score_question_greedy_and_strict_below_flexible():
    s = ev.score_question("14", ["14"], ["14"])
    assert s["vote_strict"]["correct"] and s["pass@1_strict"] == 1.0
    s = ev.score_question("14", [None], ["14"])  # no "####": only flexible finds it
    assert not s["vote_strict"]["correct"] and s["vote_flexible"]["correct"]
    assert s["votes_strict"] == {} and s["vote_strict"]["answer"] is None


def test_majority_vote_counts_and_ties_are_deterministic():
    s = ev.score_question("7", ["3", "7", "7.0", None, "3"], ["3", "7", "7.0", "9", "3"])
    assert s["votes_strict"] == {"3": 2, "7": 2}
    assert s["vote_strict"] == {"answer": "3", "count": 2, "correct": False}  # tie: the answer seen first
    assert s["pass@1_strict"] == pytest.approx(2 / 5)
    assert s["correct_flexible"] == [False, True, True, False, False]


def test_summarize_and_maj_at_1_equals_pass_at_1():
    scores = [ev.score_question(g, [a], [a]) for g, a in [("1", "1"), ("2", "3"), ("4", None), ("5", "5")]]
    summary = ev.summarize(scores, samples=1)
    assert summary["n"] == 4 and summary["strict"] == summary["pass@1_strict"] == 0.5
    assert "maj@1_strict" not in summary
    sampled = [ev.score_question("5", ["5", "6", "5"], ["5", "6", "5"]), ev.score_question("1", ["2", "2", "1"], ["2", "2", "1"])]
    summary = ev.summarize(sampled, samples=3)
    assert summary["maj@3_strict"] == summary["strict"] == 0.5
    assert summary["pass@1_strict"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    with pytest.raises(ValueError):
        ev.summarize([], 1)


def test_ensemble_of_identical_members_equals_the_member():
    member = ev.score_question("7", ["3", "7", "7", "3"], ["3", "7", "7", "3"])
    both = ev.combine_members("7", [member, member])
    for key in ("vote_strict", "vote_flexible", "pass@1_strict"):
        assert both[key]["answer"] == member[key]["answer"] if key.startswith("vote") else both[key] == member[key]
    assert both["votes_strict"] == {"3": 4, "7": 4}


def test_ensemble_vote_can_beat_each_member():
    a = ev.score_question("7", ["7"], ["7"])
    b = ev.score_question("7", ["5"], ["5"])
    c = ev.score_question("7", ["7"], ["7"])
    assert ev.combine_members("7", [b, a, c])["vote_strict"] == {"answer": "7", "count": 2, "correct": True}
    assert ev.combine_members("7", [b, a])["vote_strict"]["answer"] == "5"  # 1-1 tie: first member's answer


def test_table_lists_every_row():
    rows = [("a", {"n": 2, "strict": 0.5, "flexible": 1.0, "pass@1_strict": 0.5, "pass@1_flexible": 1.0})]
    table = ev.format_table(rows, "greedy").splitlines()
    assert len(table) == 3 and "50.0%" in table[2] and "100.0%" in table[2] and table[0].startswith("model")


# ---- model folders -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder with an untrained hybrid-tiny in final/ and a run_config.json with a custom template."""
    from mamba_trainer.models import build_model
    from mamba_trainer.tokenizer import load_tokenizer

    run = tmp_path_factory.mktemp("evalrun") / "run"
    tok = load_tokenizer("bundled")
    model = build_model("hybrid-tiny", vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, seed=3)
    model.save_pretrained(run / "final")
    tok.save_pretrained(run / "final")
    (run / "run_config.json").write_text(json.dumps({"prompt_template": PROMPT_TEMPLATE, "model": {"tokenizer": "bundled"}}))
    return run


def test_resolve_model_run_folder_model_folder_and_template(tiny_run, tmp_path):
    spec = ev.resolve_model(str(tiny_run))
    assert spec.model_dir == tiny_run / "final" and spec.run_dir == tiny_run and spec.template_source == "run_config.json"
    assert ev.resolve_model(str(tiny_run / "final")).run_dir == tiny_run
    custom = tmp_path / "custom"
    (custom / "checkpoint-5").mkdir(parents=True)
    (custom / "checkpoint-5" / "config.json").write_text("{}")
    (custom / "run_config.json").write_text(json.dumps({"prompt_template": "Q: {prompt}\nA: "}))
    spec = ev.resolve_model(str(custom / "checkpoint-5"))
    assert spec.prompt_template == "Q: {prompt}\nA: " and spec.tokenizer == "bundled"
    (custom / "run_config.json").unlink()
    spec = ev.resolve_model(str(custom / "checkpoint-5"))
    assert spec.run_dir is None and spec.template_source == "default" and spec.prompt_template == PROMPT_TEMPLATE


def test_output_path_and_dataset_label(tiny_run, tmp_path):
    spec = ev.resolve_model(str(tiny_run))
    assert ev.output_path(spec, ev.dataset_label("openai/gsm8k", None), "test", None) == \
        tiny_run / "eval" / "openai_gsm8k_test.json"
    assert ev.output_path(spec, "x", "test", str(tmp_path / "o.json")) == tmp_path / "o.json"
    assert ev.dataset_label("bundled-math", str(GSM8K_SAMPLE)) == "gsm8k_sample"


# ---- the CLI -------------------------------------------------------------------------------------------
def _run(argv, capsys):
    try:
        code = ev.main(argv)
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    return code, capsys.readouterr()


@pytest.mark.parametrize("argv, expected", [
    (["--model", "/nonexistent/model"], "/nonexistent/model"),
    (["--model", "{empty}"], "holds no model"),
    (["--model", "{run_no_final}"], "checkpoint-2"),
    (["--model", "{run}", "--data_dir", "{bad_columns}"], "'question' is missing"),
    (["--model", "{run}", "--samples", "3"], "--temperature"),
    (["--model", "{run}", "--ensemble", "vote"], "two --model"),
    (["--model", "{run}", "--limit", "0"], "--limit"),
    (["--model", "{run}", "--bogus", "1"], "--bogus"),
    (["--model", "{run}", "--ensemble", "mean", "--model", "{run}"], "vote"),
], ids=["missing", "empty", "no_final", "columns", "samples", "ensemble1", "limit", "flag", "ensemble_choice"])
def test_bad_input_is_one_line_and_exit_2(argv, expected, tiny_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "rn" / "checkpoint-2").mkdir(parents=True)
    (tmp_path / "rn" / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (tmp_path / "rn" / "run_config.json").write_text("{}")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"problem": "1+1?", "solution": "2"}) + "\n")
    subst = {"{empty}": str(tmp_path / "empty"), "{run_no_final}": str(tmp_path / "rn"), "{run}": str(tiny_run),
             "{bad_columns}": str(tmp_path / "bad.jsonl")}
    code, out = _run([subst.get(a, a) for a in argv], capsys)
    err = out.err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error:") and expected in err[-1], err
    assert [line for line in err if line.startswith("error")] == err[-1:]


def test_unreachable_hub_names_the_dataset_and_the_local_way(tiny_run, hub_offline, capsys):
    code, out = _run(["--model", str(tiny_run), "--dataset", "openai/gsm8k", "--limit", "2"], capsys)
    err = out.err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("error:")
    assert "openai/gsm8k" in err and "config main" in err and "--data_dir" in err


def test_cli_writes_results_and_prints_the_table(tiny_run, capsys):
    argv = ["--model", str(tiny_run), "--dataset", "bundled-math", "--limit", "3", "--max_new_tokens", "8",
            "--progress", "false"]
    code, out = _run(argv, capsys)
    assert code == 0, out.err
    path = tiny_run / "eval" / "bundled-math_test.json"
    assert f"wrote {path}" in out.out and "pass@1 strict" in out.out
    doc = json.loads(path.read_text())
    assert doc["settings"]["limit"] == 3 and doc["settings"]["max_new_tokens"] == 8 and doc["settings"]["samples"] == 1
    assert doc["summary"]["models"][0]["n"] == len(doc["problems"]) == 3 and doc["summary"]["ensemble"] is None
    first = doc["problems"][0]
    assert first["prompt"] == PROMPT_TEMPLATE.format(prompt=first["question"]) and first["gold"] is not None
    member = first["members"][0]
    assert len(member["generations"]) == len(member["strict"]) == len(member["correct_flexible"]) == 1


def test_local_jsonl_as_dataset_and_output_flag(tiny_run, tmp_path, capsys):
    out_file = tmp_path / "res.json"
    code, out = _run(["--model", str(tiny_run / "final"), "--dataset", str(GSM8K_SAMPLE), "--limit", "2",
                      "--max_new_tokens", "4", "--output", str(out_file), "--progress", "false"], capsys)
    assert code == 0, out.err
    doc = json.loads(out_file.read_text())
    assert doc["settings"]["data_dir"] == str(GSM8K_SAMPLE) and [p["gold"] for p in doc["problems"]] == ["54", "1825"]


# ---- generation ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model(tiny_run):
    from mamba_trainer.models import load_pretrained
    from mamba_trainer.tokenizer import load_tokenizer

    return load_pretrained(tiny_run / "final").eval(), load_tokenizer(str(tiny_run / "final"), padding_side="left")


def _mixed_length_prompts(n=5):
    qs = [p["question"] for p in load_eval_problems("bundled-math", "test", limit=n + 3)]
    # One prompt longer than two of hybrid-tiny's 64-token scan chunks, so padding shifts chunk boundaries.
    return [gen.build_prompt(PROMPT_TEMPLATE, q) for q in qs[:n - 1] + [" ".join(qs[n - 1:])]]


def test_batched_left_padded_greedy_equals_one_at_a_time(tiny_model):
    model, tok = tiny_model
    prompts = _mixed_length_prompts()
    lengths = [len(x) for x in gen.encode_prompts(tok, prompts)]
    assert max(lengths) > 128 and len(set(lengths)) == len(lengths)
    batched = gen.generate_answers(model, tok, prompts, gen.GenerationSettings(max_new_tokens=12, batch_size=len(prompts)))
    alone = gen.generate_answers(model, tok, prompts, gen.GenerationSettings(max_new_tokens=12, batch_size=1))
    assert batched == alone and all(len(t) == 1 for t in batched)
    # the logits behind it: a left-padded row matches the same prompt alone to float rounding
    ids, mask = gen.left_pad(gen.encode_prompts(tok, prompts), tok.pad_token_id)
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask).logits[:, -1]
        for row, prompt_ids in enumerate(gen.encode_prompts(tok, prompts)):
            single = model(input_ids=torch.tensor([prompt_ids])).logits[0, -1]
            torch.testing.assert_close(padded[row], single, atol=1e-4, rtol=1e-4)


def test_sampling_is_seeded(tiny_model):
    model, tok = tiny_model
    prompts = _mixed_length_prompts(3)

    def sample(seed):
        return gen.generate_answers(model, tok, prompts, gen.GenerationSettings(
            max_new_tokens=6, batch_size=4, samples=2, temperature=1.0, seed=seed))

    first = sample(0)
    assert first == sample(0) and first != sample(1)
    assert all(len(t) == 2 for t in first)
