"""prepare_cot_dataset.py: MathInstruct CoT rows (+ GSM8K train) -> one `#### N` line each, stats that add up."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mamba_trainer.answers import extract_answer
from mamba_trainer.cot import (
    classify_example,
    classify_gsm8k_example,
    dedupe_key,
    find_final_answer,
    is_program,
    process_example,
    process_gsm8k_example,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "prepare_cot_dataset.py"
FIXTURES = REPO / "tests" / "fixtures" / "cot"
MATHINSTRUCT = FIXTURES / "mathinstruct.json"
GSM8K = FIXTURES / "gsm8k_train.jsonl"

ROWS = json.loads(MATHINSTRUCT.read_text())
GSM8K_ROWS = [json.loads(line) for line in GSM8K.read_text().splitlines() if line.strip()]

# fixture row index -> final answer (kept) or drop reason; see the comments in the fixture's generator order
EXPECTED = {
    0: ("14", None), 1: ("1234", None), 2: ("0.5", None), 3: ("-7", None), 4: ("42", None), 5: ("45", None),
    6: (None, "non_numeric_answer"), 7: (None, "non_numeric_answer"), 8: (None, "pot_source"),
    9: (None, "pot_source"), 10: (None, "pot_content"), 11: (None, "pot_content"), 12: (None, "no_final_answer"),
    13: ("14", None), 14: ("72", None), 15: ("3.5", None), 16: ("10", None), 17: (None, "non_numeric_answer"),
    18: (None, "empty"), 19: (None, "non_numeric_answer"), 20: ("25", None), 21: (None, "conflicting_answers"),
}



def test_every_fixture_row_has_an_expectation():
    assert sorted(EXPECTED) == list(range(len(ROWS)))


@pytest.mark.parametrize("index", sorted(EXPECTED))
def test_classify_fixture_row(index):
    answer, reason = EXPECTED[index]
    row, got_reason = classify_example(ROWS[index])
    assert got_reason == reason
    assert process_example(ROWS[index]) == row
    if reason is None:
        assert row["final_answer"] == answer and row["source"] == ROWS[index]["source"]
        lines = row["output"].splitlines()
        assert lines[-1] == f"#### {answer}"
        assert sum(line.lstrip().startswith("####") for line in lines) == 1
        assert extract_answer(row["output"], "strict") == answer
        assert "answer is" not in row["output"].lower()  # the redundant sentence is gone


def test_answer_sentence_is_removed_but_reasoning_kept():
    assert process_example(ROWS[0])["output"] == (
        "Tom has 3 boxes with 6 apples each, so he has 3 * 6 = 18 apples.\n"
        "He gives away 4, so 18 - 4 = 14 apples are left.\n#### 14"
    )
    # mid-line "Therefore, the answer is 42.0." goes; the sentence before it stays
    assert process_example(ROWS[4])["output"] == (
        "The area of a rectangle is length times width: 6 * 7 = 42.\n#### 42"
    )
    # \boxed{} is reasoning and stays; the canonical line is added
    assert process_example(ROWS[2])["output"].endswith("\\boxed{\\frac{1}{2}}$.\n#### 0.5")


def test_mathinstruct_gsm_row_loses_annotations_and_duplicate_answer_lines():
    output = process_example(ROWS[14])["output"]
    assert "<<" not in output and output.count("72 clips altogether") == 1
    assert output.endswith("April and May.\n#### 72")
    kept = process_example(ROWS[14], keep_calculator_annotations=True)["output"]
    assert "<<48+24=72>>" in kept


@pytest.mark.parametrize("index,answer", [(6, "A"), (7, "C"), (17, "A"), (19, "2\\sqrt{3}")])
def test_keep_non_numeric_keeps_option_letters_and_expressions(index, answer):
    row, reason = classify_example(ROWS[index], keep_non_numeric=True)
    assert reason is None and row["final_answer"] == answer
    assert row["output"].splitlines()[-1] == f"#### {answer}"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("n0 = 10.0\nn1 = 4.0\nanswer = n0 * n1", True),
        ("import math\nprint(math.pi)", True),
        ("def solve():\n    return 4\nprint(solve())", True),
        ("```python\nx = 3\n```", True),
        ("# count\ntotal = 3 * 4\nprint(total)", True),
        ("x = 5 and y = 3.\nSo x + y = 8.\nThe answer is 8", False),
        ("Let x = 5.\nThen 2x = 10.", False),
        ("Natalia sold 48/2 = 24 clips in May.\n#### 24", False),
        ("If we print the list, we see 3 items.\nThe answer is 3", False),
    ],
)
def test_is_program(text, expected):
    assert is_program(text) is expected


@pytest.mark.parametrize(
    "output,answer,numeric",
    [
        ("The answer is 1,234.", "1234", True),
        ("Therefore, the final answer is: $18.", "18", True),
        ("It costs 5 dollars.\nAnswer: 5 dollars", "5", True),
        ("So $y = \\boxed{-2}$.", "-2", True),
        ("Thus the answer is $\\boxed{\\frac{3}{4}}$.", "0.75", True),
        ("The answer is (B)", "B", False),
        ("The answer is Option C", "C", False),
        ("First the answer is 3.\nThen correcting, the answer is 4.", "4", True),  # the last one counts
        ("The answer is 2.\n#### 5", "5", True),  # a "####" line wins
        ("nothing to see", None, False),
    ],
)
def test_find_final_answer(output, answer, numeric):
    got, got_numeric, _ = find_final_answer(output)
    assert (got, got_numeric) == (answer, numeric)


def test_gsm8k_rows_normalize_commas_and_strip_annotations():
    rows = [process_gsm8k_example(r) for r in GSM8K_ROWS]
    assert all(r is not None and r["source"] == "gsm8k" for r in rows)
    by_answer = {r["final_answer"]: r for r in rows}
    assert {"1000", "37500", "72"} <= set(by_answer)
    assert by_answer["1000"]["output"] == "The school buys 40 * 25 = 1000 pencils.\n#### 1000"
    assert all("<<" not in r["output"] and extract_answer(r["output"]) == r["final_answer"] for r in rows)
    kept = process_gsm8k_example(GSM8K_ROWS[0], keep_calculator_annotations=True)
    assert "<<48/2=24>>" in kept["output"] and kept["output"].endswith("\n#### 72")


def test_gsm8k_row_without_final_line_is_dropped():
    assert classify_gsm8k_example({"question": "q", "answer": "no final line"}) == (None, "no_final_answer")


# ---- the script, end to end -------------------------------------------------------------------------------


def run_script(*args, tmp_path):
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf_cache"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cot_mixed")
    out = tmp / "out"
    proc = run_script("--data_files", MATHINSTRUCT, "--output", out, "--mix_gsm8k", GSM8K, tmp_path=tmp)
    assert proc.returncode == 0, proc.stderr
    return out, json.loads((out / "stats.json").read_text())


def check_counts_add_up(block):
    assert block["kept"] + sum(block["dropped"].values()) == block["rows_in"]


@pytest.mark.integration  # runs the script
def test_script_output_loads_and_every_row_ends_in_one_final_line(mixed_run):
    import datasets

    out, stats = mixed_run
    ds = datasets.load_from_disk(str(out))
    assert set(ds.column_names) == {"instruction", "output", "source", "final_answer"}
    assert len(ds) == stats["rows_out"] == stats["kept"] + stats["gsm8k_mixed"]
    for row in ds:
        lines = row["output"].splitlines()
        assert lines[-1] == f"#### {row['final_answer']}"
        assert sum(line.lstrip().startswith("####") for line in lines) == 1
        assert extract_answer(row["output"], "strict") == row["final_answer"]
    assert len({dedupe_key(r) for r in ds}) == len(ds)  # duplicates removed


@pytest.mark.integration  # runs the script
def test_script_stats_add_up(mixed_run):
    _, stats = mixed_run
    assert stats["rows_in"] == len(ROWS)
    check_counts_add_up(stats)
    for block in stats["per_source"].values():
        check_counts_add_up(block)
    assert sum(b["rows_in"] for b in stats["per_source"].values()) == stats["rows_in"]
    assert sum(b["kept"] for b in stats["per_source"].values()) == stats["kept"]
    expected_drops = {}
    for answer, reason in EXPECTED.values():
        if reason:
            expected_drops[reason] = expected_drops.get(reason, 0) + 1
    expected_drops["duplicate"] = 1  # row 13 repeats row 0
    expected_drops["duplicate_of_gsm8k"] = 1  # row 14 is GSM8K's Natalia question
    assert stats["dropped"] == expected_drops
    assert stats["per_source"]["data/PoT/mathqa.json"] == {"rows_in": 1, "kept": 0, "dropped": {"pot_source": 1}}


@pytest.mark.integration  # runs the script
def test_script_mixes_gsm8k_with_annotations_stripped(mixed_run):
    import datasets

    out, stats = mixed_run
    assert stats["gsm8k"] == {"rows_in": len(GSM8K_ROWS), "kept": len(GSM8K_ROWS), "dropped": {}}
    assert stats["gsm8k_mixed"] == len(GSM8K_ROWS)
    gsm = datasets.load_from_disk(str(out)).filter(lambda r: r["source"] == "gsm8k")
    assert len(gsm) == len(GSM8K_ROWS)
    assert not any("<<" in o for o in gsm["output"])
    assert {"1000", "37500"} <= set(gsm["final_answer"])


@pytest.mark.integration  # runs the script
def test_script_without_gsm8k_keeps_non_numeric_on_request(tmp_path):
    import datasets

    out = tmp_path / "out"
    proc = run_script("--data_files", MATHINSTRUCT, "--output", out, "--keep_non_numeric", "--limit", 20,
                      tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == 20 and stats["gsm8k_mixed"] == 0 and stats["gsm8k"] is None
    check_counts_add_up(stats)
    ds = datasets.load_from_disk(str(out))
    assert {"A", "C", "72"} <= set(ds["final_answer"])  # letters kept; Natalia's row kept without GSM8K
    assert "non_numeric_answer" not in stats["dropped"]


@pytest.mark.integration  # runs the script
def test_script_hub_unreachable_is_one_line_exit_2(tmp_path):
    proc = run_script("--dataset", "TIGER-Lab/MathInstruct", "--output", tmp_path / "out", tmp_path=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("error: ") and "TIGER-Lab/MathInstruct" in lines[0] and "--data_files" in lines[0]
    assert not (tmp_path / "out").exists()


# ---- user mistakes, in process (fast) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def script_main():
    spec = importlib.util.spec_from_file_location("prepare_cot_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "exactly one of --dataset"),
        (["--dataset", "x/y", "--data_files", str(MATHINSTRUCT)], "exactly one of --dataset"),
        (["--data_files", "missing.json"], "file not found: missing.json"),
        (["--data_files", str(GSM8K)], "missing column(s) ['instruction', 'output']"),
        (["--data_files", str(MATHINSTRUCT), "--mix_gsm8k", str(MATHINSTRUCT)], "missing column(s) ['question'"),
        (["--data_files", str(MATHINSTRUCT), "--limit", "0"], "--limit must be a positive"),
        (["--data_files", str(MATHINSTRUCT), "--bogus", "1"], "unknown argument(s)"),
    ],
)
def test_user_mistakes_are_one_line_errors(script_main, tmp_path, capsys, monkeypatch, args, message):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    assert script_main(["--output", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


@pytest.mark.parametrize("content, message", [("", "is empty; put one JSON object per line in it"),
                                              ('{"instruction": "x"', "could not read"),
                                              ("\n\n", "is empty")], ids=["empty", "malformed", "blank-lines"])
def test_unreadable_data_files_are_one_line_errors(script_main, tmp_path, capsys, monkeypatch, content, message):
    """The same line ``mamba-train --data_dir`` gives for the same file (an empty file used to end in StopIteration)."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    assert script_main(["--output", str(tmp_path / "out"), "--data_files", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1] and str(path) in err[-1]
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite_and_must_be_a_dataset(script_main, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert script_main(["--data_files", str(MATHINSTRUCT), "--output", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert script_main(["--data_files", str(MATHINSTRUCT), "--output", str(out), "--overwrite"]) == 2
    assert "refusing to delete" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.integration  # runs the script
def test_dataset_flag_accepts_a_local_file_like_data_files(mixed_run, tmp_path):
    """--dataset ./file.json reads the file (it used to say the Hub had no data file at that path)."""
    out = tmp_path / "out"
    proc = run_script("--dataset", MATHINSTRUCT, "--output", out, "--mix_gsm8k", GSM8K, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["rows_in"], stats["kept"], stats["rows_out"]) == tuple(mixed_run[1][k] for k in ("rows_in", "kept", "rows_out"))
    missing = run_script("--dataset", "./no_such.json", "--output", tmp_path / "x", tmp_path=tmp_path)
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr and "Hub (" not in missing.stderr
