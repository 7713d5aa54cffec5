"""Batched answer generation for math evaluation: prompts, length-sorted left-padded batches, stopping at ``#### N``.

    texts = generate_answers(model, tokenizer, prompts, GenerationSettings(max_new_tokens=256, batch_size=16))
    texts[i]   # the K generations (K = settings.samples) for prompts[i], each cut after its answer line

Prompts are tokenized exactly as training tokenizes them (``add_special_tokens=False``), preceded by the
tokenizer's bos token when it has one: packed training puts an eos (the bundled and GPT-NeoX tokenizers'
bos) before almost every ``Question:``, so that is the context the model knows.

Batches are prompts of similar length (sorted, longest first) padded on the LEFT with an attention mask;
Mamba2/Zamba2 layers zero the padded positions before their convolution and scan, so a padded prompt
generates what it would alone (``tests/test_evaluate.py`` checks it on a trained tiny model; the differences
left are float rounding). ``exact_length=True`` batches only equal-length prompts (no padding at all).

Generation stops per sequence at eos or once its text holds a complete answer line (``#### N`` and a
newline) or starts a new ``Question:``; the stored text is cut there (:func:`truncate_at_stop`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

__all__ = ["AnswerStoppingCriteria", "GenerationSettings", "answer_line_end", "batch_seed", "build_prompt",
           "encode_prompts", "generate_answers", "left_pad", "plan_batches", "truncate_at_stop"]

# A complete final-answer line: "####", something with a digit, then the newline that ends it.
_ANSWER_LINE = re.compile(r"####[^\n]*\d[^\n]*\n")
_NEW_QUESTION = "\nQuestion:"  # the model has moved on to inventing the next problem
# New tokens decoded per row at each step to look for the stop: covers "#### 1,234,567.89\n" with
# one token per digit (the bundled tokenizer) and the line's leading text.
_TAIL_TOKENS = 32


@dataclass
class GenerationSettings:
    """Decoding settings. ``temperature`` 0 is greedy; ``samples`` generations per prompt (K)."""

    max_new_tokens: int = 256
    batch_size: int = 16  # sequences per generate() call (a prompt's K samples count K)
    samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    exact_length: bool = False  # batch only equal-length prompts: no padding at all
    prepend_bos: bool = True

    @property
    def sampling(self) -> bool:
        return self.temperature > 0


def build_prompt(template: str, question: str) -> str:
    """The prompt the model was trained on: ``template`` with ``{prompt}`` replaced by the question.

    >>> build_prompt("Question: {prompt}\\nAnswer: ", " How many? ")
    'Question: How many?\\nAnswer: '
    """
    return template.format(prompt=str(question).strip())


def answer_line_end(text: str) -> int | None:
    """Index just past the stop point in a generation, or None when it has none yet.

    The stop point is the end of the first complete ``#### N`` line (newline included), or the start of a
    new ``\\nQuestion:``, whichever comes first.

    >>> answer_line_end("2*9 = 18\\n#### 18\\nmore text")
    17
    >>> answer_line_end("#### 18"), answer_line_end("18 apples\\nQuestion: x"), answer_line_end("#### \\n")
    (None, 9, None)
    """
    ends = []
    match = _ANSWER_LINE.search(text)
    if match:
        ends.append(match.end())
    question = text.find(_NEW_QUESTION)
    if question >= 0:
        ends.append(question)
    return min(ends) if ends else None


def truncate_at_stop(text: str) -> str:
    """The generation up to its stop point (see :func:`answer_line_end`), trailing whitespace removed.

    >>> truncate_at_stop("x = 3\\n#### 3\\nQuestion: Tom has")
    'x = 3\\n#### 3'
    >>> truncate_at_stop("no answer yet ")
    'no answer yet'
    """
    end = answer_line_end(text)
    return (text if end is None else text[:end]).rstrip()


def plan_batches(lengths: Sequence[int], batch_size: int, exact_length: bool = False) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size``: sorted by length, longest first (stable).

    Neighbours in length share a batch, so little padding is needed; the longest batch comes first, so an
    out-of-memory shows at once. ``exact_length``: a batch never mixes lengths.

    >>> plan_batches([3, 5, 3, 4], 2)
    [[1, 3], [0, 2]]
    >>> plan_batches([3, 5, 3, 4], 2, exact_length=True)
    [[1], [3], [0, 2]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and (not exact_length or lengths[last[0]] == lengths[i]):
            last.append(i)
        else:
            batches.append([i])
    return batches


def left_pad(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both ``(batch, longest)`` int64, padded on the left.

    >>> ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, width - len(seq):] = torch.as_tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask


class AnswerStoppingCriteria(StoppingCriteria):
    """Per-sequence stop once the generated text has a complete answer line or starts a new question."""

    def __init__(self, tokenizer, prompt_width: int, tail_tokens: int = _TAIL_TOKENS):
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.tail_tokens = tail_tokens

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        start = max(self.prompt_width, input_ids.shape[1] - self.tail_tokens)
        tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
        return torch.tensor([answer_line_end(t) is not None for t in tails], dtype=torch.bool,
                            device=input_ids.device)


def encode_prompts(tokenizer, prompts: Sequence[str], prepend_bos: bool = True) -> list[list[int]]:
    """Token ids of each prompt as training makes them (no special tokens), after the bos token if asked."""
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    return [([bos] if prepend_bos and bos is not None else []) + list(x) for x in ids]


def batch_seed(seed: int, batch_index: int) -> int:
    """The torch seed of one generate() call: a hash of (seed, batch), so runs with nearby seeds do not share
    batches' random streams."""
    return int(np.random.SeedSequence([seed, batch_index]).generate_state(1)[0])


def generate_answers(model, tokenizer, prompts: Sequence[str], settings: GenerationSettings,
                     progress: Callable[[int], None] | None = None) -> list[list[str]]:
    """For each prompt, ``settings.samples`` generations (text after the prompt, cut at the stop point).

    Sampling reseeds torch for every batch from (seed, batch index): the same prompts with the same settings
    give the same samples; another ``batch_size`` gives other (equally valid) samples. ``progress(n)`` is
    called with the number of sequences finished after each batch.
    """
    encoded = encode_prompts(tokenizer, prompts, settings.prepend_bos)
    items = [(p, k) for p in range(len(prompts)) for k in range(settings.samples)]
    batches = plan_batches([len(encoded[p]) for p, _ in items], settings.batch_size, settings.exact_length)
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens, do_sample=settings.sampling,
        temperature=settings.temperature if settings.sampling else None,
        top_p=settings.top_p if settings.sampling else None, top_k=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    device = next(model.parameters()).device
    out: list[list[str]] = [[""] * settings.samples for _ in prompts]
    for b, batch in enumerate(batches):
        ids, mask = left_pad([encoded[items[i][0]] for i in batch], config.pad_token_id)
        if settings.sampling:
            torch.manual_seed(batch_seed(settings.seed, b))
        stop = StoppingCriteriaList([AnswerStoppingCriteria(tokenizer, ids.shape[1])])
        with torch.inference_mode():
            generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                       generation_config=config, stopping_criteria=stop)
        texts = tokenizer.batch_decode(generated[:, ids.shape[1]:], skip_special_tokens=True)
        for i, text in zip(batch, texts):
            p, k = items[i]
            out[p][k] = truncate_at_stop(text)
        if progress is not None:
            progress(len(batch))
    return out
