"""Answer extraction and scoring: the pure functions the CoT data and the GSM8K evaluator share."""


import pytest

from mamba_trainer.answers import (
    CANONICAL_ANSWER_PREFIX,
    extract_answer,
    format_final_answer,
    is_correct,
    majority_vote,
    normalize_number,
    pass_at_1,
)



# text -> (strict, flexible)
EXTRACTION = [
    ("Natalia sold 48+24 = 72 clips.\n#### 72", "72", "72"),
    ("#### 1,000", "1000", "1000"),
    ("#### -3", "-3", "-3"),
    ("#### 1/3", "1/3", "1/3"),  # a fraction reads as one number (lm-eval's pattern would give "1")
    ("####  12.0", "12", "12"),
    ("3 + 4 = 7.\nThe answer is 7.", "7", "7"),
    ("So the answer is 1,234.", "1234", "1234"),  # mid-sentence, lower case
    ("The answer is $18.", None, "18"),  # lm-eval's strict number has no "$"
    ("#### $5", None, "5"),
    ("She has 5 apples and eats 2, so 3 are left.", None, "3"),
    ("It is 5, not 7/2.", None, "3.5"),
    ("The total is $1,234.50.", None, "1234.5"),
    ("Temperature fell to -4 degrees", None, "-4"),
    ("#### 3\nQuestion: next one\n#### 4", "3", "3"),  # first "####", like lm-eval's take_first
    ("The answer is 5.\n#### 6", "6", "6"),  # "####" wins over "The answer is"
    ("#### .\nThe answer is 9", "9", "9"),  # a match that is not a number is skipped
    ("no digits at all", None, None),
    ("", None, None),
]


@pytest.mark.parametrize("text,strict,flexible", EXTRACTION, ids=[repr(t[0][:30]) for t in EXTRACTION])
def test_extract_answer(text, strict, flexible):
    assert extract_answer(text, "strict") == strict
    assert extract_answer(text, mode="flexible") == flexible


def test_extract_answer_rejects_unknown_mode():
    with pytest.raises(ValueError, match="strict"):
        extract_answer("#### 1", mode="loose")


NORMALIZATION = [
    ("1,234", "1234"), ("1,234,567.25", "1234567.25"), ("$18", "18"), ("\\$18", "18"), ("18.", "18"),
    ("  42 ", "42"), ("12.0", "12"), ("12.500", "12.5"), ("-3", "-3"), ("-3.0", "-3"), ("+7", "7"),
    ("\u22125", "-5"), (".5", "0.5"), ("0.5", "0.5"), ("1/2", "0.5"), ("\\frac{1}{2}", "0.5"),
    ("\\dfrac{3}{4}", "0.75"), ("-\\frac{1}{2}", "-0.5"), ("2/6", "1/3"), ("-4/2", "-2"), ("50%", "50"),
    ("-0", "0"), (12, "12"), (12.0, "12"), ("1/0", None), ("B", None), ("", None), (".", None),
    ("1.2.3", None), ("12 apples", None), (None, None), (True, None),
]


@pytest.mark.parametrize("raw,expected", NORMALIZATION, ids=[repr(r) for r, _ in NORMALIZATION])
def test_normalize_number(raw, expected):
    assert normalize_number(raw) == expected


@pytest.mark.parametrize("a,b", [("12.0", "12"), ("0.5", "1/2"), ("1,000", "1000"), ("$5", "5."), ("-3", "-3.00")])
def test_equal_numbers_normalize_equal(a, b):
    assert normalize_number(a) == normalize_number(b)
    assert is_correct(a, b) and is_correct(b, a)


@pytest.mark.parametrize(
    "pred,gold,expected",
    [
        ("72", "72", True), ("72.0", "72", True), ("0.30000000000000004", "0.3", True),
        ("0.33", "1/3", False), ("71", "72", False), ("1000.1", "1000", False),
        (None, "72", False), ("B", "B", False), ("72", None, False),
    ],
)
def test_is_correct(pred, gold, expected):
    assert is_correct(pred, gold) is expected


def test_majority_vote_counts_normalized_numbers_and_ignores_none():
    assert majority_vote(["12", None, "12.0", "7", "7", "1,2"]) == ("12", 3)


@pytest.mark.parametrize(
    "votes,expected",
    [
        (["7", "3", "3", "7"], ("7", 2)),  # tie -> earliest first occurrence
        (["3", "7", "7", "3"], ("3", 2)),
        ([None, "5", None, "9"], ("5", 1)),
        ([None, None], (None, 0)),
        ([], (None, 0)),
        (["B", "b ", "B"], ("B", 2)),  # non-numbers vote as written, stripped
    ],
)
def test_majority_vote_ties_are_deterministic(votes, expected):
    assert majority_vote(votes) == expected
    assert majority_vote(iter(votes)) == expected  # any iterable


def test_pass_at_1():
    assert pass_at_1([True, False, False, True]) == 0.5
    assert pass_at_1([False]) == 0.0
    with pytest.raises(ValueError):
        pass_at_1([])


@pytest.mark.parametrize("value", ["72", "1,234", "-3", "12.0", "0.5", "1/3", 18, 2.5])
def test_final_answer_line_round_trips_through_strict_extraction(value):
    line = format_final_answer(value)
    assert line.startswith(CANONICAL_ANSWER_PREFIX) and "\n" not in line
    assert extract_answer(f"Some reasoning.\n{line}", "strict") == normalize_number(value)


def test_format_final_answer_rejects_empty_or_multiline():
    for bad in ("", "  ", "1\n2"):
        with pytest.raises(ValueError):
            format_final_answer(bad)
