"""Final-answer extraction and scoring for GSM8K-style math: pure functions shared by data and evaluation.

The canonical final-answer line is ``#### <number>`` (GSM8K's own format): the CoT data preparation
(``prepare_cot_dataset.py``) ends every solution with exactly one such line, and the evaluator reads
it back with :func:`extract_answer` in ``"strict"`` mode.

Extraction follows lm-evaluation-harness's ``gsm8k`` / ``gsm8k-cot`` filters (ideas, not code):

* ``strict-match`` (gsm8k): ``#### (-?[0-9.,]+)``, first match.
* ``strict-match`` (gsm8k-cot): ``The answer is (-?[0-9.,]+)``, first match.
  (Both read here with an optional ``/q`` so a fraction answer ``#### 1/3`` is one number.)
* ``flexible-extract``: the *last* number-like match in the text.

Numbers are compared after :func:`normalize_number`, which plays the role of lm-eval's
``regexes_to_ignore`` (``,``, ``$``, a trailing ``.``) and additionally makes ``12.0 == 12`` and
``1/2 == 0.5``.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Iterable, Optional, Sequence, Tuple

__all__ = [
    "CANONICAL_ANSWER_PREFIX",
    "normalize_number",
    "extract_answer",
    "gold_answer",
    "is_correct",
    "majority_vote",
    "pass_at_1",
    "format_final_answer",
]

#: The prefix of the one final-answer line that training data and the evaluator share.
CANONICAL_ANSWER_PREFIX = "#### "

EXTRACTION_MODES = ("strict", "flexible")

# lm-eval's strict patterns; the number group is theirs ([0-9.,] with an optional leading minus) plus an
# optional "/q", so that "#### 1/3" (a non-terminating answer as format_final_answer writes it) reads back
# as 1/3, not 1. "####" may be followed by spaces/tabs (lm-eval wants exactly one space); "answer is" is
# case-insensitive because mid-sentence it reads "so the answer is 5".
_STRICT_NUMBER = r"(-?[0-9.,]+(?:/[0-9]+)?)"
_STRICT_HASH = re.compile(r"####[ \t]*" + _STRICT_NUMBER)
_STRICT_ANSWER_IS = re.compile(r"the answer is[ \t]*" + _STRICT_NUMBER, re.IGNORECASE)
# Flexible: any number, optionally with $, thousands commas, decimals, or an a/b fraction. Unlike lm-eval's
# ``(-?[$0-9.,]{2,})|(-?[0-9]+)`` it never matches junk such as "$." or ",,", and reads "1/2" as one number.
_ANY_NUMBER = re.compile(r"-?\$?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:/\d+)?")

_LATEX_FRAC = re.compile(r"^(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}$")
_PLAIN_FRAC = re.compile(r"^(-?\d+)/(-?\d+)$")
_DECIMAL = re.compile(r"^-?(?:\d+\.?\d*|\.\d+)$")


def _format_fraction(value: Fraction) -> str:
    """Canonical text of an exact rational: integer, terminating decimal, or reduced ``p/q``.

    >>> _format_fraction(Fraction(3, 8)), _format_fraction(Fraction(-1, 3)), _format_fraction(Fraction(10))
    ('0.375', '-1/3', '10')
    """
    if value.denominator == 1:
        return str(value.numerator)
    den, twos, fives = value.denominator, 0, 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den != 1:  # non-terminating decimal: keep it exact
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = abs(value.numerator) * (10**places // value.denominator)
    digits = str(scaled).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:].rstrip('0')}"


def normalize_number(s) -> Optional[str]:
    """Canonical string of a number written the way math solutions write it, or None if it is not one.

    Strips whitespace, ``$`` / ``\\$``, thousands commas, a trailing ``.``, a ``%`` sign (the number is
    kept as written: ``50%`` -> ``50``) and a leading ``+``. The result is exact: an integer (``12.0`` ->
    ``12``), a terminating decimal without trailing zeros (``1/2`` and ``\\frac{1}{2}`` -> ``0.5``), or a
    reduced fraction when the decimal would not terminate (``2/6`` -> ``1/3``). So equal numbers give
    equal strings. ints and floats are read through ``str()``.

    >>> normalize_number("1,234"), normalize_number("$18"), normalize_number("12."), normalize_number(" 7 ")
    ('1234', '18', '12', '7')
    >>> normalize_number("12.0"), normalize_number("12.50"), normalize_number("-3"), normalize_number(".5")
    ('12', '12.5', '-3', '0.5')
    >>> normalize_number("1/2"), normalize_number("\\\\frac{1}{2}"), normalize_number("4/6"), normalize_number("50%")
    ('0.5', '0.5', '2/3', '50')
    >>> normalize_number("-0"), normalize_number(12.0), normalize_number("1/0"), normalize_number("B")
    ('0', '12', None, None)
    """
    if s is None or isinstance(s, bool):
        return None
    text = str(s).strip().replace("\u2212", "-")  # unicode minus sign
    for junk in ("\\$", "$", "\\%", "%", ",", " "):
        text = text.replace(junk, "")
    text = text.rstrip(".")
    if text.startswith("+"):
        text = text[1:]
    match = _LATEX_FRAC.match(text)
    if match:
        sign, num, den = match.groups()
        text = f"{sign}{num}/{den}".replace("--", "")
        if text.count("-") > 1:
            return None
    match = _PLAIN_FRAC.match(text)
    if match:
        num, den = int(match.group(1)), int(match.group(2))
        return None if den == 0 else _format_fraction(Fraction(num, den))
    if _DECIMAL.match(text):
        return _format_fraction(Fraction(text))
    return None


def _first_number(pattern: re.Pattern, text: str) -> Optional[str]:
    for match in pattern.finditer(text):
        value = normalize_number(match.group(1))
        if value is not None:
            return value
    return None


def extract_answer(text: Optional[str], mode: str = "strict") -> Optional[str]:
    """The final numeric answer in a solution or model output, normalized, or None if there is none.

    ``mode="strict"``: the first ``#### N`` (lm-eval gsm8k strict-match); if there is none, the first
    ``The answer is N`` (lm-eval gsm8k-cot strict-match; case-insensitive). N is lm-eval's ``-?[0-9.,]+``
    plus an optional ``/q`` (``#### 1/3``), so ``#### $5`` and ``The answer is $5`` do *not* match in
    strict mode.
    ``mode="flexible"``: strict first, else the last number in the text (lm-eval flexible-extract), where a
    number may carry ``$``, commas, decimals, or be an ``a/b`` fraction.
    Matches that do not normalize (``#### .``) are skipped.

    >>> extract_answer("She pays 2*9 = 18 dollars.\\n#### 18")
    '18'
    >>> extract_answer("#### 1,000"), extract_answer("So the answer is 12.0."), extract_answer("It is 5.")
    ('1000', '12', None)
    >>> extract_answer("#### 3\\nQuestion: ... #### 4")  # first match, as lm-eval's take_first
    '3'
    >>> extract_answer("It is 5, not 7/2.", "flexible"), extract_answer("costs $1,234.", "flexible")
    ('3.5', '1234')
    >>> extract_answer("no digits here", "flexible") is None
    True
    """
    if mode not in EXTRACTION_MODES:
        raise ValueError(f"unknown extraction mode {mode!r}; use one of {EXTRACTION_MODES}")
    if not text:
        return None
    answer = _first_number(_STRICT_HASH, text) or _first_number(_STRICT_ANSWER_IS, text)
    if answer is not None or mode == "strict":
        return answer
    for match in reversed(list(_ANY_NUMBER.finditer(text))):
        value = normalize_number(match.group(0))
        if value is not None:
            return value
    return None


def gold_answer(answer_text) -> Optional[str]:
    """The reference answer, normalized: the ``#### N`` of a GSM8K solution, or a bare number.

    >>> gold_answer("3 * 24 = 72\\n#### 72"), gold_answer("1,250"), gold_answer("see above")
    ('72', '1250', None)
    """
    return extract_answer(str(answer_text), "strict") or normalize_number(answer_text)


def is_correct(pred, gold, rel_tol: float = 1e-6) -> bool:
    """Whether two answers are the same number (both are normalized first; None or non-numbers are wrong).

    Exact rationals compare exactly; otherwise a relative tolerance ``rel_tol`` absorbs float print noise
    (``0.30000000000000004``), not rounding: ``0.33`` is not ``1/3``.

    >>> is_correct("1,000", "1000"), is_correct("$18.00", "18"), is_correct("0.5", "1/2")
    (True, True, True)
    >>> is_correct("0.30000000000000004", "0.3"), is_correct("0.33", "1/3"), is_correct(None, "3")
    (True, False, False)
    """
    p, g = normalize_number(pred), normalize_number(gold)
    if p is None or g is None:
        return False
    fp, fg = Fraction(p), Fraction(g)
    if fp == fg:
        return True
    try:
        return math.isclose(float(fp), float(fg), rel_tol=rel_tol, abs_tol=0.0)
    except OverflowError:
        return False


def tally(answers: Iterable[Optional[str]]) -> dict:
    """Votes per answer, in order of first appearance. None answers (nothing extracted) are ignored;
    numbers vote by their normalized form, other strings as written, stripped.

    >>> tally(["12", None, "12.0", "7"])
    {'12': 2, '7': 1}
    """
    counts: dict = {}
    for answer in answers:
        if answer is None:
            continue
        key = normalize_number(answer) or str(answer).strip()
        if key:
            counts[key] = counts.get(key, 0) + 1
    return counts


def majority_vote(answers: Iterable[Optional[str]]) -> Tuple[Optional[str], int]:
    """The most frequent answer and its count (self-consistency); ``(None, 0)`` if every answer is None.

    Votes are counted by `tally` (``12`` and ``12.0`` are one answer). Ties go to the answer that
    appeared first.

    >>> majority_vote(["12", None, "12.0", "7", "7"])
    ('12', 2)
    >>> majority_vote(["7", "3", "3", "7"])  # tie: "7" came first
    ('7', 2)
    >>> majority_vote([None, None])
    (None, 0)
    """
    counts = tally(answers)  # insertion-ordered, so max() returns the earliest of equal counts
    if not counts:
        return None, 0
    best = max(counts, key=counts.get)
    return best, counts[best]


def pass_at_1(correct: Sequence[bool]) -> float:
    """Fraction of samples that are correct (the unbiased pass@1 estimate for one problem).

    >>> pass_at_1([True, False, True, True])
    0.75
    """
    if len(correct) == 0:
        raise ValueError("pass_at_1 needs at least one sample")
    return sum(bool(c) for c in correct) / len(correct)


def format_final_answer(n) -> str:
    """The canonical final-answer line ``#### n``; numbers are normalized, other answers kept as written.

    >>> format_final_answer("1,234"), format_final_answer(12.0), format_final_answer("B")
    ('#### 1234', '#### 12', '#### B')
    """
    text = str(n).strip()
    value = normalize_number(text) or text
    if not value or "\n" in value:
        raise ValueError(f"a final answer must be one non-empty line, got {n!r}")
    return CANONICAL_ANSWER_PREFIX + value
