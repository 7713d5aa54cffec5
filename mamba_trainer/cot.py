"""Per-row logic of ``prepare_cot_dataset.py``: keep MathInstruct's chain-of-thought rows, end each in ``#### N``.

Pure functions, one row in, one row (or a drop reason) out, in the style of trl's dataset scripts:

* :func:`classify_example` / :func:`process_example` — a MathInstruct row (``source``, ``instruction``,
  ``output``) -> ``{"instruction", "output", "source", "final_answer"}`` or a drop reason.
* :func:`classify_gsm8k_example` / :func:`process_gsm8k_example` — a GSM8K row (``question``, ``answer``).
* :func:`dedupe_key` — what makes two rows duplicates (normalized instruction + final answer).

Every kept ``output`` ends in exactly one line ``#### N`` (:func:`mamba_trainer.answers.format_final_answer`)
and ``extract_answer(output, "strict") == final_answer`` for numeric answers.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

from mamba_trainer.answers import format_final_answer, normalize_number

#: MathInstruct's ``source`` values (TIGER-Lab/MathInstruct) start with ``data/CoT/`` for prose (chain of
#: thought) and ``data/PoT/`` for Python programs (program of thought), which are dropped.
POT_SOURCE_PREFIX = "data/PoT/"
GSM8K_SOURCE = "gsm8k"

_CALCULATOR = re.compile(r"<<[^<>]*>>")
# A line that only code starts with. Prose never begins a line with "def f(" or "print(".
_CODE_LINE = re.compile(
    r"^\s*(?:def \w+\(|class \w+(?:\(.*\))?:$|import \w|from [\w.]+ import |print\(|return\b|for \w+(?:, ?\w+)* in .+:$"
    r"|while .+:$|if .+:$|elif .+:$|else:$|try:$|except\b.*:$|```)"
)
_ASSIGNMENT = re.compile(r"^\s*[A-Za-z_]\w*(?:\[[^\]]*\])?\s*[-+*/]?=(?!=)\s*\S")
_PY_COMMENT = re.compile(r"^\s*#(?!###)")

_HASH_LINE = re.compile(r"^[ \t]*####[ \t]*(?P<val>.*?)[ \t]*$", re.MULTILINE)
# "The answer is N", "the final answer is: N"; the value runs to the end of the sentence (". " or line end).
_ANSWER_IS = re.compile(r"\b(?:final )?answer is\b[ \t]*:?[ \t]*(?P<val>[^\n]*?)(?:\.(?=\s|$)|$)",
                        re.IGNORECASE | re.MULTILINE)
_ANSWER_COLON = re.compile(r"^[ \t]*(?:final )?answer[ \t]*:[ \t]*(?P<val>.*?)[ \t.]*$",
                           re.IGNORECASE | re.MULTILINE)
_OPTION = re.compile(r"^(?:option|choice)?\s*\(?([A-Ea-e])\)?[.:]?$", re.IGNORECASE)
_LEADING_NUMBER = re.compile(r"^(-?\$?\s?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:/\d+)?)\s*(?P<rest>.*)$")
_UNITS = re.compile(r"^[A-Za-z %.]*$")


def source_of(example: dict) -> str:
    """The row's ``source`` (stats are kept per source); ``"unknown"`` when the column is missing or blank."""
    return (example.get("source") or "").strip() or "unknown"


def strip_calculator_annotations(text: str) -> str:
    """Remove GSM8K's calculator annotations ``<<48/2=24>>``.

    >>> strip_calculator_annotations("She sold 48/2 = <<48/2=24>>24 clips.")
    'She sold 48/2 = 24 clips.'
    """
    return _CALCULATOR.sub("", text)


def is_program(text: str) -> bool:
    """Whether a solution is Python code (program of thought) rather than prose.

    True if any line starts like code (``def``, ``import``, ``print(``, ``for ... :``, a code fence), or if
    every non-empty line is an assignment or a ``#`` comment (MathQA-style ``n0 = 10.0`` programs).

    >>> is_program("n0 = 10.0\\nn1 = 4.0\\nanswer = n0 * n1")
    True
    >>> is_program("import math\\nprint(math.sqrt(2))"), is_program("x = 5 and y = 3, so x + y = 8.\\nThe answer is 8.")
    (True, False)
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if any(_CODE_LINE.match(line) for line in lines):
        return True
    return len(lines) >= 2 and all(
        (_ASSIGNMENT.match(line) and not line.rstrip().endswith(".")) or _PY_COMMENT.match(line) for line in lines
    )


def _unwrap_boxed(text: str) -> Optional[Tuple[int, int, str]]:
    """The last ``\\boxed{...}`` (balanced braces) as (start, end, content), or None."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth, i = 0, start + len("\\boxed")
        while i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return start, i + 1, text[start + len("\\boxed{"):i]
            i += 1
        start = text.rfind("\\boxed{", 0, start)  # unbalanced: try an earlier one
    return None


def parse_answer_value(raw: str) -> Tuple[Optional[str], bool]:
    """Read the value after an answer marker: ``(normalized number, True)``, ``(text, False)`` or ``(None, False)``.

    >>> parse_answer_value("$18"), parse_answer_value("1,234 apples"), parse_answer_value("$\\\\boxed{\\\\frac{1}{2}}$")
    (('18', True), ('1234', True), ('0.5', True))
    >>> parse_answer_value("(B)"), parse_answer_value("2\\\\sqrt{3}"), parse_answer_value("")
    (('B', False), ('2\\\\sqrt{3}', False), (None, False))
    """
    value = raw.strip().strip("$").strip()
    boxed = _unwrap_boxed(value)
    if boxed is not None:
        value = boxed[2].strip()
    value = value.rstrip(".").strip().strip("$").strip()
    if not value:
        return None, False
    number = normalize_number(value)
    if number is not None:
        return number, True
    option = _OPTION.match(value)
    if option:
        return option.group(1).upper(), False
    leading = _LEADING_NUMBER.match(value)  # "18 dollars", "12 cm": a number followed by unit words only
    if leading and _UNITS.match(leading.group("rest")):
        number = normalize_number(leading.group(1))
        if number is not None:
            return number, True
    return value, False


def _sentence_span(text: str, start: int, end: int) -> Tuple[int, int]:
    """Widen [start, end) to the whole sentence on its line ("So the answer is 5." not just "answer is 5.")."""
    line_start = text.rfind("\n", 0, start) + 1
    boundaries = [m.end() for m in re.finditer(r"[.!?](?:\s+)", text[line_start:start])]
    return line_start + (boundaries[-1] if boundaries else 0), end


def find_final_answer(output: str) -> Tuple[Optional[str], bool, str]:
    """The final answer of a solution and the solution without its answer sentence.

    Returns ``(answer, is_numeric, body)``. The answer is taken from, in order of precedence: the last
    ``#### N`` line; else the last ``The answer is N`` sentence or ``Answer: N`` line (the last one whose
    value is a number, if any is); else the last ``\\boxed{N}``. The chosen marker, and every other
    ``####`` / answer-is / ``Answer:`` marker with the same value, are removed from ``body``; a
    ``\\boxed{}`` stays (it is part of the reasoning).

    >>> find_final_answer("3 + 4 = 7 apples.\\nThe answer is 7.")
    ('7', True, '3 + 4 = 7 apples.')
    >>> find_final_answer("So $x = \\\\boxed{5}$.")
    ('5', True, 'So $x = \\\\boxed{5}$.')
    >>> find_final_answer("no answer here")
    (None, False, 'no answer here')
    """
    markers = []  # (kind, start, end, raw value)
    for m in _HASH_LINE.finditer(output):
        markers.append(("hash", m.start(), m.end(), m.group("val")))
    for m in _ANSWER_IS.finditer(output):
        start, end = _sentence_span(output, m.start(), m.end())
        markers.append(("text", start, end, m.group("val")))
    for m in _ANSWER_COLON.finditer(output):
        markers.append(("text", m.start(), m.end(), m.group("val")))
    hashes = [mk for mk in markers if mk[0] == "hash"]
    # "...the answer is 5. We check the answer is correct.": prefer the last marker that reads as a number
    numeric_markers = [mk for mk in markers if parse_answer_value(mk[3])[1]]
    chosen = max(hashes or numeric_markers or markers, key=lambda mk: mk[1], default=None)
    if chosen is None:
        boxed = _unwrap_boxed(output)
        if boxed is None:
            return None, False, output.strip()
        answer, numeric = parse_answer_value(boxed[2])
        return answer, numeric, output.strip()
    answer, numeric = parse_answer_value(chosen[3])
    if answer is None:
        return None, False, output.strip()
    spans = sorted((s, e) for _, s, e, raw in markers if (s, e) == chosen[1:3] or parse_answer_value(raw)[0] == answer)
    merged = []  # overlapping spans (an "Answer: the answer is 5" line) are removed once
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    body = output
    for start, end in reversed(merged):
        rest = body[end:]
        if start == 0 or body[start - 1] == "\n":  # the sentence opened its line: so does what follows it
            rest = rest.lstrip(" \t")
        body = body[:start] + rest
    body = "\n".join(line.rstrip() for line in body.splitlines())
    return answer, numeric, re.sub(r"\n{3,}", "\n\n", body).strip()


def _with_final_line(body: str, answer: str) -> str:
    final = format_final_answer(answer)
    return f"{body}\n{final}" if body else final


def classify_example(
    example: dict, *, keep_non_numeric: bool = False, keep_calculator_annotations: bool = False
) -> Tuple[Optional[dict], Optional[str]]:
    """One MathInstruct row -> ``(row, None)`` to keep or ``(None, reason)`` to drop.

    Reasons (the keys of ``stats.json``'s ``dropped``): ``empty`` (instruction or output blank), ``pot_source``
    (source is data/PoT/...), ``pot_content`` (a program under a CoT source), ``no_final_answer`` (no
    ``#### N``, "The answer is N", "Answer: N" or \\boxed{N}), ``non_numeric_answer`` ("The answer is (B)"),
    ``conflicting_answers`` (a second ``#### M`` with another value); ``mark_duplicates`` adds ``duplicate``
    and ``duplicate_of_gsm8k``.

    >>> row, _ = classify_example({"source": "data/CoT/gsm_rft.json", "instruction": "2+2?",
    ...                            "output": "2 + 2 = 4.\\nThe answer is 4."})
    >>> row["output"], row["final_answer"]
    ('2 + 2 = 4.\\n#### 4', '4')
    >>> classify_example({"source": "data/PoT/mathqa.json", "instruction": "q", "output": "print(4)"})
    (None, 'pot_source')
    """
    source = source_of(example)
    instruction = (example.get("instruction") or "").strip()
    output = (example.get("output") or "").strip()
    if not instruction or not output:
        return None, "empty"
    if source.startswith(POT_SOURCE_PREFIX):
        return None, "pot_source"
    if is_program(output):
        return None, "pot_content"
    if not keep_calculator_annotations:
        output = strip_calculator_annotations(output)
    answer, numeric, body = find_final_answer(output)
    if answer is None:
        return None, "no_final_answer"
    if not numeric and not keep_non_numeric:
        return None, "non_numeric_answer"
    if _HASH_LINE.search(body):
        return None, "conflicting_answers"
    row = {"instruction": instruction, "output": _with_final_line(body, answer), "source": source,
           "final_answer": answer}
    return row, None


def process_example(example: dict, **options) -> Optional[dict]:
    """:func:`classify_example` without the reason: the cleaned row, or None to drop it."""
    return classify_example(example, **options)[0]


def classify_gsm8k_example(
    example: dict, *, keep_calculator_annotations: bool = False
) -> Tuple[Optional[dict], Optional[str]]:
    """One GSM8K row (``question``, ``answer`` ending in ``#### N``) -> ``(row, None)`` or ``(None, reason)``.

    >>> row, _ = classify_gsm8k_example({"question": "q?", "answer": "10*100 = <<10*100=1000>>1000\\n#### 1,000"})
    >>> row["output"], row["final_answer"], row["source"]
    ('10*100 = 1000\\n#### 1000', '1000', 'gsm8k')
    """
    question = (example.get("question") or "").strip()
    answer_text = (example.get("answer") or "").strip()
    if not question or not answer_text:
        return None, "empty"
    if not keep_calculator_annotations:
        answer_text = strip_calculator_annotations(answer_text)
    hashes = list(_HASH_LINE.finditer(answer_text))
    answer = normalize_number(hashes[-1].group("val")) if hashes else None
    if answer is None:
        return None, "no_final_answer" if not hashes else "non_numeric_answer"
    body = answer_text[: hashes[-1].start()].rstrip()
    if _HASH_LINE.search(body):
        return None, "conflicting_answers"
    row = {"instruction": question, "output": _with_final_line(body, answer), "source": GSM8K_SOURCE,
           "final_answer": answer}
    return row, None


def process_gsm8k_example(example: dict, **options) -> Optional[dict]:
    """:func:`classify_gsm8k_example` without the reason: the cleaned row, or None to drop it."""
    return classify_gsm8k_example(example, **options)[0]


def dedupe_key(row: dict) -> Tuple[str, str]:
    """Rows with equal keys are duplicates: the instruction lower-cased with whitespace collapsed, + answer.

    >>> dedupe_key({"instruction": " What is  2+2?\\n", "final_answer": "4"})
    ('what is 2+2?', '4')
    """
    return " ".join(row["instruction"].lower().split()), row["final_answer"]


def mark_duplicates(keys, reasons, protected=frozenset()) -> list:
    """Drop reasons after deduplication: a kept row (reason ``""``) whose key is in ``protected`` becomes
    ``"duplicate_of_gsm8k"``; a kept row whose key an earlier kept row had becomes ``"duplicate"``.

    >>> mark_duplicates(["a", "b", "a", "c", "a"], ["", "", "", "", "empty"], protected={"c"})
    ['', '', 'duplicate', 'duplicate_of_gsm8k', 'empty']
    """
    seen, out = set(), []
    for key, reason in zip(keys, reasons):
        if not reason:
            if key in protected:
                reason = "duplicate_of_gsm8k"
            elif key in seen:
                reason = "duplicate"
            seen.add(key)
        out.append(reason)
    return out


def summarize(sources, reasons) -> dict:
    """Counts for ``stats.json``: rows in, kept, dropped per reason, and the same per source.
    ``kept + sum(dropped.values()) == rows_in`` overall and per source.

    >>> summarize(["a", "a", "b"], ["", "pot_source", ""])["per_source"]["a"]
    {'rows_in': 2, 'kept': 1, 'dropped': {'pot_source': 1}}
    """
    def block():
        return {"rows_in": 0, "kept": 0, "dropped": {}}

    total, per_source = block(), {}
    for source, reason in zip(sources, reasons):
        for counts in (total, per_source.setdefault(source, block())):
            counts["rows_in"] += 1
            if reason:
                counts["dropped"][reason] = counts["dropped"].get(reason, 0) + 1
            else:
                counts["kept"] += 1
    for counts in (total, *per_source.values()):
        counts["dropped"] = dict(sorted(counts["dropped"].items()))
    return {**total, "per_source": dict(sorted(per_source.items()))}


OUTPUT_COLUMNS = ("instruction", "output", "source", "final_answer")


def tag_example(example: dict, *, gsm8k: bool = False, **options) -> dict:
    """A flat row for ``Dataset.map``: the output columns plus ``drop_reason`` (``""`` when kept).

    >>> tag_example({"source": "data/PoT/numglue.json", "instruction": "q", "output": "print(1)"})["drop_reason"]
    'pot_source'
    """
    classify = classify_gsm8k_example if gsm8k else classify_example
    row, reason = classify(example, **options)
    if row is None:
        source = GSM8K_SOURCE if gsm8k else source_of(example)
        row = {"instruction": "", "output": "", "source": source, "final_answer": ""}
    return {**row, "drop_reason": reason or ""}
