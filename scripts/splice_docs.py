"""docs/benchmarks.md's result tables, from the summary.md each study's ``--report`` writes.

    python bench/packing.py --report && python bench/lr_transfer.py --report   # the summaries, from the runs
    python scripts/splice_docs.py            # those summaries into docs/benchmarks.md, between the markers
    python scripts/splice_docs.py --check    # exit 1 (one line) if the docs show something else

Each table sits between ``<!-- NAME -->`` and ``<!-- /NAME -->`` in docs/benchmarks.md; the prose around it is
written by hand and says what the table shows.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"


def lr_transfer(text: str) -> str:
    """The study's summary under a line saying where it comes from; its headings one level down (they sit under
    a ### section in the docs)."""
    head, _, body = text.partition("\n")
    runs = re.fullmatch(r"# lr-transfer study: (\d+) finished runs", head.strip())
    if runs is None:
        raise ValueError(f"bench/results/lr_transfer/summary.md: unexpected first line {head!r}")
    body = re.sub(r"^### ", "#### ", body.strip("\n"), flags=re.M)
    return (f"The finished runs ({runs.group(1)}; `bench/results/lr_transfer/summary.md`, as `--report` wrote "
            f"it):\n\n{body}")


#: marker name -> (summary file, how it is shown)
SECTIONS = {
    "lr-transfer-summary": (ROOT / "bench" / "results" / "lr_transfer" / "summary.md", lr_transfer),
    "packing-summary": (ROOT / "bench" / "results" / "packing_400" / "summary.md", lambda text: text.strip("\n")),
}


def pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- {name} -->\n)(.*?)(\n<!-- /{name} -->)", re.S)


def splice_into(text: str, name: str, table: str, where: str = "docs/benchmarks.md") -> str:
    """``text`` with ``table`` between its ``<!-- name -->`` and ``<!-- /name -->`` lines (also README's preset
    table: scripts/preset_table.py); ValueError naming ``where`` when the markers are missing."""
    if pattern(name).search(text) is None:
        raise ValueError(f"{where} has no <!-- {name} --> ... <!-- /{name} --> section")
    return pattern(name).sub(lambda m: m.group(1) + table + m.group(3), text)


def spliced(docs: str) -> str:
    for name, (path, show) in SECTIONS.items():
        docs = splice_into(docs, name, show(path.read_text()))
    return docs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Splice the studies' summary tables into docs/benchmarks.md.")
    p.add_argument("--check", action="store_true", help="only say whether the docs are up to date")
    args = p.parse_args(argv)
    try:
        docs = DOCS.read_text()
        new = spliced(docs)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new != docs:
            print("docs/benchmarks.md is stale: python scripts/splice_docs.py rewrites its tables", file=sys.stderr)
            return 1
        return 0
    if new != docs:
        DOCS.write_text(new)
        print("docs/benchmarks.md: tables updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
