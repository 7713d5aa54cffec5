"""How tokenized examples become training rows (``--packing``): concatenated and cut, packed whole best-fit with
per-example ``position_ids``, or one padded example per row. Pure functions of their arguments.
"""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow.compute as pc

from mamba_trainer.errors import UserError

IGNORE_INDEX = -100
FEATURES = datasets.Features({c: datasets.List(datasets.Value("int64")) for c in ("input_ids", "labels")})

#: How examples become training sequences (``--packing``):
#: bfd: whole examples packed best-fit (``trl.pack_dataset``), each row carrying ``position_ids`` that restart at 0
#:   per example, so the model keeps the examples apart (``mamba_trainer.packed``); no example is split.
#: bfd_leaky: the same rows without ``position_ids``: state and attention flow from one example into the next
#:   (for measuring what the boundaries are worth).
#: stream: every example concatenated and cut each ``max_seq_length`` tokens (examples split across rows, state
#:   flowing between them): what ``packing=True`` meant before bfd existed; runs made with it resume with it.
#: none: one example per row, right-padded (``attention_mask``).
PACKING_MODES = ("bfd", "bfd_leaky", "stream", "none")
#: each mode in a few words, for the run log
PACKING_WORDS = {"bfd": "whole examples, kept apart", "bfd_leaky": "whole examples, leaking into each other",
                 "stream": "concatenated and cut", "none": "one padded example per row"}
_PACKING_ALIASES = {True: "stream", False: "none", "true": "stream", "false": "none"}
#: the training rows of a new run (``bench/packing.py`` chose it: docs/benchmarks.md#packing-modes)
DEFAULT_PACKING = "bfd"
#: How the held-out split is built (``--eval_packing``): bfd (whole examples, each alone in the model: the loss
#: of the task generation scores) or none (one padded example per row; the same losses, more padding), or same
#: (as ``--packing``: leaky under stream and bfd_leaky; how every run evaluated before this setting existed, so a
#: run_config.json without it reads as "same").
EVAL_PACKING_MODES = ("bfd", "none", "same")
DEFAULT_EVAL_PACKING = "bfd"


def packing_mode(value) -> str:
    """The packing mode a ``--packing`` value or a recorded ``packing`` setting names; booleans are the modes they
    meant when packing was a yes/no setting (True: stream, False: none).

    >>> packing_mode(True), packing_mode("false"), packing_mode("bfd")
    ('stream', 'none', 'bfd')
    """
    mode = _PACKING_ALIASES.get(value.lower() if isinstance(value, str) else value, value)
    if mode not in PACKING_MODES:
        raise UserError(f"--packing {value!r}: must be one of {', '.join(PACKING_MODES)} (true = stream, false = none)")
    return mode


def eval_packing_mode(value, packing) -> str:
    """The packing mode of the held-out split for ``--eval_packing value`` beside ``--packing packing``.

    >>> eval_packing_mode("bfd", "stream"), eval_packing_mode("same", "stream"), eval_packing_mode("same", False)
    ('bfd', 'stream', 'none')
    """
    if value not in EVAL_PACKING_MODES:
        raise UserError(f"--eval_packing {value!r}: must be one of {', '.join(EVAL_PACKING_MODES)} (bfd and none "
                        "keep each held-out example alone; same packs it as --packing does)")
    return packing_mode(packing) if value == "same" else value


def padding_fraction(info: dict, split: str = "train") -> float:
    """Padding tokens / tokens in a split's rows, from ``build_datasets``' info (``none`` rows record no padding
    count: their padding is the rows' length minus their real tokens).

    >>> padding_fraction({"max_seq_length": 10, "counts": {"train_sequences": 4},
    ...                   "tokens": {"train": {"tokens": 30}}})
    0.25
    """
    rows = info["counts"][f"{split}_sequences"] * info["max_seq_length"]
    tokens = info["tokens"][split]
    return tokens.get("padding_tokens", rows - tokens["tokens"]) / rows if rows else 0.0


def pad_batch(batch: dict, max_seq_length: int, pad_token_id: int) -> dict:
    """Batched ``map`` function for ``packing=False``: truncate, right-pad, and add ``attention_mask``."""
    out = {"input_ids": [], "labels": [], "attention_mask": []}
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        ids, labels = ids[:max_seq_length], labels[:max_seq_length]
        pad = max_seq_length - len(ids)
        out["input_ids"].append(ids + [pad_token_id] * pad)
        out["labels"].append(labels + [IGNORE_INDEX] * pad)
        out["attention_mask"].append([1] * len(ids) + [0] * pad)
    return out


def flat(dataset: datasets.Dataset, column: str) -> np.ndarray:
    """One column of token lists concatenated in dataset order (indices from select/shuffle respected)."""
    chunks = dataset.with_format("arrow")[:][column].chunks
    return np.concatenate([c.flatten().to_numpy() for c in chunks] or [np.zeros(0, np.int64)]).astype(np.int64)


def pack(dataset: datasets.Dataset, max_seq_length: int, pad_token_id: int) -> tuple[datasets.Dataset, dict]:
    """Concatenate all examples (each already ends in eos) and cut into ``max_seq_length`` blocks.

    Label masks travel with their tokens. The last block is right-padded with ``pad_token_id`` and label
    -100; causal models never attend forward, so no attention mask is needed. Blocks with no label left
    (only prompt tokens) are dropped: they would give a 0/0 loss.
    """
    ids, labels = flat(dataset, "input_ids"), flat(dataset, "labels")
    n_blocks = -(-len(ids) // max_seq_length)
    pad = n_blocks * max_seq_length - len(ids)
    ids = np.concatenate([ids, np.full(pad, pad_token_id, np.int64)]).reshape(n_blocks, max_seq_length)
    labels = np.concatenate([labels, np.full(pad, IGNORE_INDEX, np.int64)]).reshape(n_blocks, max_seq_length)
    keep = (labels != IGNORE_INDEX).any(axis=1)
    packed = datasets.Dataset.from_dict({"input_ids": ids[keep], "labels": labels[keep]}, features=FEATURES)
    return packed, {"padding_tokens": int(pad), "dropped_blocks": int((~keep).sum())}


def pack_best_fit(dataset: datasets.Dataset, max_seq_length: int, pad_token_id: int,
                  boundaries: bool = True) -> tuple[datasets.Dataset, dict]:
    """Whole examples packed best-fit-decreasing into rows of ``max_seq_length`` tokens (``trl.pack_dataset``).

    An example longer than ``max_seq_length`` is truncated (counted); one left without a label is dropped
    (counted). Each row is right-padded to ``max_seq_length`` (labels -100). With ``boundaries``, rows carry
    ``position_ids`` restarting at 0 at each example (and at the padding), as ``DataCollatorWithFlattening`` does,
    and each example's first token has label -100: predicting it from the previous example is no part of either.
    """
    from trl import pack_dataset

    lengths = pc.list_value_length(dataset.with_format("arrow")[:]["input_ids"]).to_numpy()
    truncated = int((lengths > max_seq_length).sum())
    # an example keeps a label within its first max_seq_length tokens: count them per example from the flat labels
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    position = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
    labelled = (flat(dataset, "labels") != IGNORE_INDEX) & (position < max_seq_length)
    has_label = np.add.reduceat(labelled, starts) > 0 if len(dataset) else np.zeros(0, bool)
    kept = dataset if has_label.all() else dataset.select(np.flatnonzero(has_label))
    features = datasets.Features({**FEATURES, **({"position_ids": FEATURES["labels"]} if boundaries else {})})
    stats = {"truncated_examples": truncated, "dropped_examples": int((~has_label).sum())}
    if len(kept) == 0:
        return datasets.Dataset.from_dict({k: [] for k in features}, features=features), {"padding_tokens": 0, **stats}
    packed = pack_dataset(kept, max_seq_length, strategy="bfd", map_kwargs={"keep_in_memory": True})

    def finish(batch):
        out = {"input_ids": [], "labels": []} | ({"position_ids": []} if boundaries else {})
        for ids, labels, seq_lengths in zip(batch["input_ids"], batch["labels"], batch["seq_lengths"]):
            pad = max_seq_length - len(ids)
            labels = list(labels)
            if boundaries:
                starts = np.cumsum([0, *seq_lengths[:-1]])
                for start in starts[1:]:
                    labels[start] = IGNORE_INDEX
                out["position_ids"].append([i for n in [*seq_lengths, pad] for i in range(n)])
            out["input_ids"].append(list(ids) + [pad_token_id] * pad)
            out["labels"].append(labels + [IGNORE_INDEX] * pad)
        return out

    rows = packed.map(finish, batched=True, batch_size=1000, remove_columns=packed.column_names, features=features,
                      keep_in_memory=True, desc="Padding packed rows")
    padding = len(rows) * max_seq_length - int(lengths[has_label].clip(max=max_seq_length).sum())
    return rows, {"padding_tokens": int(padding), **stats}
