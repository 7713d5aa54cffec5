"""Seeded generator of GSM8K-style math word problems: the ``bundled-math`` dataset.

Each problem is ``{"question", "answer", "family", "template", "steps", "difficulty", "values"}`` where ``answer``
is worked solution lines in GSM8K's style (``12 * 3 = <<12*3=36>>36``) ending in ``#### N``, so the
cleaning and answer-extraction code written for GSM8K works unchanged. ``values`` holds the structured
numbers a problem was made from; ``math_templates.TEMPLATE_BY_NAME[template].solve(values)`` recomputes the answer
from them by a closed form that shares no code with the wording (the tests check both agree).

    from mamba_trainer.mathgen import generate_problems, load_bundled_math
    generate_problems(3, seed=0)            # list of dicts, identical for identical seeds
    load_bundled_math("train")              # datasets.Dataset, 20,000 problems (seed 0)
    python -m mamba_trainer.mathgen         # rewrites resources/math_sample.jsonl after a deliberate change

Difficulty tiers count calculator steps: easy 1-2, medium 3, hard 4-5. Numbers stay small (mostly
below 1,000) so a few-million-parameter model can learn some of it on a CPU.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

from .math_templates import TEMPLATES

RESOURCES = Path(__file__).parent / "resources"
SAMPLE_PATH = RESOURCES / "math_sample.jsonl"
SAMPLE_SEED, SAMPLE_SIZE = 1234, 200
# Seeds and sizes of the bundled splits; test questions that also occur in train are skipped.
BUNDLED_SPLITS = {"train": (0, 20_000), "test": (1, 500)}
TIER_STEPS = {"easy": (1, 2), "medium": (3,), "hard": (4, 5)}
TIER_WEIGHTS = {"easy": 0.4, "medium": 0.3, "hard": 0.3}

# ---- generation -----------------------------------------------------------------------------------
def difficulty_of(steps: int) -> str:
    return next(t for t, s in TIER_STEPS.items() if steps in s)


def _make_one(r: random.Random, tiers: tuple[str, ...]) -> dict:
    tier = r.choices(tiers, weights=[TIER_WEIGHTS[t] for t in tiers])[0]
    templates = [t for t in TEMPLATES if t.steps in TIER_STEPS[tier]]
    template = r.choice(templates)
    values, question, lines, answer = template.draw(r)
    return {"question": question, "answer": "\n".join(lines + [f"#### {answer}"]),
            "family": template.family, "template": template.name, "steps": template.steps, "difficulty": tier, "values": values}


def generate_problems(n: int, seed: int, *, difficulty: str | tuple[str, ...] | None = None,
                      unique: bool = True, exclude: set[str] | frozenset[str] = frozenset()) -> list[dict]:
    """``n`` problems, identical for identical arguments.

    ``difficulty`` restricts the tiers ("easy", "medium", "hard"); ``unique`` drops repeated questions;
    ``exclude`` is a set of questions never to emit (how the test split stays disjoint from train).
    """
    tiers = tuple(TIER_STEPS) if difficulty is None else ((difficulty,) if isinstance(difficulty, str) else tuple(difficulty))
    unknown = [t for t in tiers if t not in TIER_STEPS]
    if unknown:
        raise ValueError(f"unknown difficulty {unknown[0]!r}; choose from {', '.join(TIER_STEPS)}")
    r, seen, out = random.Random(seed), set(exclude), []
    for _ in range(100 * n + 1000):
        if len(out) == n:
            break
        p = _make_one(r, tiers)
        if unique and p["question"] in seen or p["question"] in exclude:
            continue
        seen.add(p["question"])
        out.append(p)
    if len(out) < n:
        raise ValueError(f"could only make {len(out)} distinct problems of {n}; ask for fewer or allow repeats")
    return out


@lru_cache(maxsize=None)
def bundled_problems(split: str) -> tuple[dict, ...]:
    """The problems of a bundled split (cached: train takes about a second to generate)."""
    if split not in BUNDLED_SPLITS:
        from mamba_trainer.errors import UserError
        raise UserError(f"bundled-math has no split {split!r}; use --dataset_split with one of: {', '.join(BUNDLED_SPLITS)}")
    seed, n = BUNDLED_SPLITS[split]
    exclude = frozenset() if split == "train" else frozenset(p["question"] for p in bundled_problems("train"))
    return tuple(generate_problems(n, seed, exclude=exclude))


def load_bundled_math(split: str = "train"):
    """``datasets.Dataset`` with columns question, answer, family, steps, difficulty."""
    import datasets

    rows = bundled_problems(split)
    return datasets.Dataset.from_dict({k: [p[k] for p in rows] for k in ("question", "answer", "family", "steps", "difficulty")})


def write_sample(path: Path = SAMPLE_PATH) -> None:
    """Freeze ``generate_problems(SAMPLE_SIZE, SAMPLE_SEED)``; a test checks the generator still makes it."""
    with open(path, "w") as f:
        for p in generate_problems(SAMPLE_SIZE, SAMPLE_SEED):
            f.write(json.dumps(p, sort_keys=True) + "\n")


if __name__ == "__main__":
    write_sample()
    print(f"wrote {SAMPLE_PATH}")
