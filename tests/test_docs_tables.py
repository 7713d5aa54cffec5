"""docs/benchmarks.md shows the studies' tables as their ``--report`` wrote them (scripts/splice_docs.py)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load():
    spec = importlib.util.spec_from_file_location("splice_docs", ROOT / "scripts" / "splice_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_tables_are_the_committed_summaries():
    splice = load()
    docs = splice.DOCS.read_text()
    assert splice.spliced(docs) == docs, "docs/benchmarks.md is stale: python scripts/splice_docs.py rewrites it"


def test_a_changed_summary_is_spliced_between_the_markers_and_nothing_else(tmp_path, monkeypatch, capsys):
    splice = load()
    summary = tmp_path / "summary.md"
    summary.write_text("| a |\n|---|\n| 2 |\n")
    docs = tmp_path / "benchmarks.md"
    docs.write_text("before\n<!-- t -->\n| a |\n|---|\n| 1 |\n<!-- /t -->\nafter\n")
    monkeypatch.setattr(splice, "DOCS", docs)
    monkeypatch.setattr(splice, "SECTIONS", {"t": (summary, lambda text: text.strip("\n"))})
    assert splice.main(["--check"]) == 1 and "stale" in capsys.readouterr().err
    assert splice.main([]) == 0
    assert docs.read_text() == "before\n<!-- t -->\n| a |\n|---|\n| 2 |\n<!-- /t -->\nafter\n"
    assert splice.main(["--check"]) == 0
    docs.write_text("no markers\n")
    assert splice.main([]) == 2 and "no <!-- t -->" in capsys.readouterr().err


def test_the_lr_summary_heading_becomes_the_line_above_its_tables():
    shown = load().lr_transfer("# lr-transfer study: 7 finished runs\n\n### Table\n\n| x |\n")
    assert shown == ("The finished runs (7; `bench/results/lr_transfer/summary.md`, as `--report` wrote it):\n\n"
                     "#### Table\n\n| x |")
    with pytest.raises(ValueError, match="unexpected first line"):
        load().lr_transfer("# something else\n")
