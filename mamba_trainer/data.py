"""Training data: load a source, pick its columns, tokenize with response-only loss, pack (`mamba_trainer.packing`).

    tok = load_tokenizer("bundled")
    train, eval_, info = build_datasets(tok)                                  # bundled-math, 256-token rows (bfd)
    build_datasets(tok, dataset="openai/gsm8k")                               # config "main" implied
    build_datasets(tok, data_dir="data/mathinstruct.json", text_column="instruction,output")

Prompt format, shared with evaluation (``run_config.json`` records it):
``PROMPT_TEMPLATE.format(prompt=question)`` then the response, then the tokenizer's eos token. Prompt
and response are tokenized separately, exactly as evaluation tokenizes the prompt before generating.
Labels are -100 over the prompt unless ``train_on_prompt``; a single text column trains on everything.

Sources, in order: ``data_dir`` (a ``save_to_disk`` folder, or JSON/JSONL files), else ``dataset`` (a Hub
name via ``datasets.load_dataset``; ``bundled-math`` is the shipped generator and the default).

Everything is a pure function of its arguments and ``seed``: same arguments, same blocks in the same
order (the trainer's bit-exact resume relies on it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc

from configs.text import one_line
from mamba_trainer.errors import UserError
from mamba_trainer.mathgen import load_bundled_math
from mamba_trainer.packing import (DEFAULT_EVAL_PACKING, DEFAULT_PACKING, FEATURES, IGNORE_INDEX,  # noqa: F401
                                   PACKING_MODES, PACKING_WORDS, eval_packing_mode, flat as _flat, pack,
                                   pack_best_fit, packing_mode, pad_batch, padding_fraction)
from mamba_trainer.paths import FILE_BUILDERS, local_path

PROMPT_TEMPLATE = "Question: {prompt}\nAnswer: "
BUNDLED = "bundled-math"
# Recognized without --text_column, first match wins: GSM8K, MathInstruct, plain text.
AUTO_COLUMNS = (("question", "answer"), ("instruction", "output"), ("text",))
EVAL_SPLITS = ("validation", "valid", "dev", "test")  # a source's own held-out split, preferred in this order
DEFAULT_CONFIGS = {"openai/gsm8k": "main", "gsm8k": "main"}  # datasets that refuse to load without one
MIN_EVAL_EXAMPLES = 10  # but never more than a tenth of a tiny dataset
# int64 throughout: from numpy, datasets would infer int32, and cross-entropy needs int64 labels.
__all__ = ["PROMPT_TEMPLATE", "PACKING_MODES", "build_datasets", "format_example", "load_eval_problems", "load_source",
           "resolve_columns", "tokenize_batch", "pack"]


def format_example(prompt: str, response: str) -> tuple[str, str]:
    """(prompt text, response text); the tokenizer's eos is appended to the response at tokenization."""
    return PROMPT_TEMPLATE.format(prompt=prompt), response


# ---- sources ----------------------------------------------------------------------------------------
def _load_hub(name: str, config: str | None, split: str) -> datasets.Dataset:
    try:
        return datasets.load_dataset(name, config, split=split)
    except datasets.exceptions.DatasetNotFoundError as exc:
        raise UserError(f"dataset {name!r} was not found on the Hugging Face Hub (or is gated) ({one_line(exc, 200)}); "
                        "check --dataset, or pass a local copy with --data_dir /path/to/folder") from exc
    except OSError as exc:  # no connection, offline mode: datasets raises ConnectionError
        raise UserError(f"could not fetch dataset {name!r} (config {config}, split {split}) from the Hugging Face Hub "
                        f"({one_line(exc, 200)}); download it where the Hub is reachable and pass it with "
                        "--data_dir /path/to/folder (a save_to_disk folder or JSON/JSONL files)") from exc
    except ValueError as exc:  # unknown config or split
        raise UserError(f"could not load dataset {name!r} ({one_line(exc, 200)}); check --dataset_config and --dataset_split") from exc


def load_local(data_dir: str | Path, split: str) -> tuple[datasets.Dataset, datasets.Dataset | None, dict]:
    path = Path(data_dir).expanduser()
    source = {"kind": "local", "data_dir": str(data_dir), "split": split, "eval_split": None}
    if not path.exists():
        raise UserError(f"--data_dir {data_dir} does not exist; pass a folder made by save_to_disk, "
                        "a folder of .json/.jsonl files, or one such file")
    if path.is_dir() and any((path / f).exists() for f in ("dataset_dict.json", "dataset_info.json", "state.json")):
        loaded = datasets.load_from_disk(str(path))
        source["kind"] = "save_to_disk"
        if isinstance(loaded, datasets.Dataset):
            return loaded, None, source
        if split not in loaded:
            raise UserError(f"--data_dir {data_dir} has splits {', '.join(loaded)}, not {split!r}; "
                            "pick one with --dataset_split")
        source["eval_split"] = next((s for s in EVAL_SPLITS if s in loaded and s != split), None)
        return loaded[split], loaded[source["eval_split"]] if source["eval_split"] else None, source

    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in FILE_BUILDERS)
    builders = {FILE_BUILDERS.get(p.suffix) for p in files}
    if not files or None in builders or len(builders) > 1:
        raise UserError(f"--data_dir {data_dir} is not a save_to_disk folder and has no readable data files; "
                        f"pass one folder or file of a single kind: {', '.join(FILE_BUILDERS)}")
    # train.jsonl + test.jsonl side by side are splits; any other set of files is one training set.
    by_split = {p.stem: p for p in files if p.stem in (split, *EVAL_SPLITS)}
    train_files = [by_split[split]] if split in by_split else files
    eval_name = next((s for s in EVAL_SPLITS if s in by_split and s != split), None) if split in by_split else None
    source.update(kind="files", files=[str(p) for p in files], eval_split=eval_name)
    builder = builders.pop()

    def read(paths):
        return load_data_files(paths, builder, "--data_dir")

    return read(train_files), read([by_split[eval_name]]) if eval_name else None, source


def load_data_files(paths, builder: str = "json", flag: str = "--data_dir") -> datasets.Dataset:
    """Rows of local data files (``builder``: json for .json/.jsonl, parquet, csv) as one Dataset, or one line
    naming the file and what to do (``flag`` is the option the user gave them with)."""
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"{flag}: file not found: {', '.join(missing)}; pass existing data file paths")
    empty = [str(p) for p in paths if not p.read_bytes().strip()]
    if empty:  # datasets' json builder meets an empty file with a bare StopIteration
        raise UserError(f"{', '.join(empty)} is empty; put one JSON object per line in it "
                        f"(e.g. run prepare_cot_dataset.py) or point {flag} at another file")
    try:
        return datasets.load_dataset(builder, data_files=[str(p) for p in paths], split="train")
    except StopIteration:
        raise UserError(f"{', '.join(map(str, paths))} holds no rows; check that it is valid {builder}") from None
    except (datasets.exceptions.DatasetGenerationError, ValueError) as exc:  # malformed rows, mixed schemas
        raise UserError(f"{flag}: could not read {', '.join(map(str, paths))} "
                        f"({one_line(exc.__cause__ or exc, 200)}); check that it is valid {builder}") from exc


def local_data_path(name: str | Path | None) -> Path | None:
    """The local file or folder a dataset name points to, or None for a Hub id / ``bundled-math``.

    The rule is ``mamba_trainer.paths.local_path``'s, shared with models and tokenizers: an existing path wins
    over a Hub id of the same spelling; a name that looks like a path but does not exist is an error, not a
    Hub lookup.

    >>> local_data_path("openai/gsm8k") is None and local_data_path("bundled-math") is None
    True
    """
    if name is None or str(name) == BUNDLED:
        return None
    return local_path(name, "dataset {name}: no such file or folder; fix the path, or pass a Hugging Face Hub id "
                            "such as openai/gsm8k")


def load_source(dataset: str | None = None, dataset_config: str | None = None, dataset_split: str = "train",
                data_dir: str | Path | None = None) -> tuple[datasets.Dataset, datasets.Dataset | None, dict]:
    """(raw train split, the source's own eval split or None, JSON-able description of the source).

    ``dataset`` may also be a local file or folder (see ``local_data_path``): it is read like ``data_dir``."""
    if data_dir is None and local_data_path(dataset) is not None:
        data_dir, dataset = dataset, None
    if data_dir is not None:
        if dataset not in (None, BUNDLED):
            raise UserError(f"got both --dataset {dataset} and --data_dir {data_dir}; pass only one")
        return load_local(data_dir, dataset_split)
    name = dataset or BUNDLED
    if name == BUNDLED:
        return load_bundled_math(dataset_split), None, {"kind": "bundled", "dataset": BUNDLED, "split": dataset_split,
                                                        "eval_split": None}
    config = dataset_config or DEFAULT_CONFIGS.get(name)
    return _load_hub(name, config, dataset_split), None, {"kind": "hub", "dataset": name, "config": config,
                                                          "split": dataset_split, "eval_split": None}


def resolve_columns(column_names: list[str], text_column: str | None = None) -> tuple[str, str | None]:
    """(prompt column, response column) or (text column, None) for plain language-model text."""
    listing = ", ".join(column_names)
    if text_column:
        cols = [c.strip() for c in text_column.split(",") if c.strip()]
        if len(cols) not in (1, 2):
            raise UserError(f"--text_column takes 'PROMPT,RESPONSE' or one TEXT column, not {text_column!r}; "
                            f"the dataset's columns are: {listing}")
        missing = [c for c in cols if c not in column_names]
        if missing:
            raise UserError(f"column {missing[0]!r} is not in the dataset; its columns are: {listing} "
                            "(pass --text_column PROMPT,RESPONSE or --text_column TEXT)")
        return cols[0], cols[1] if len(cols) == 2 else None
    for cols in AUTO_COLUMNS:
        if all(c in column_names for c in cols):
            return cols[0], cols[1] if len(cols) == 2 else None
    raise UserError(f"no question/answer, instruction/output or text column in the dataset; its columns are: "
                    f"{listing} (pass --text_column PROMPT,RESPONSE or --text_column TEXT)")


# ---- tokenization -----------------------------------------------------------------------------------
def _text(value) -> str:
    return "" if value is None else str(value)


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # fast tokenizers: the same ids without the Python wrapper, about twice as fast
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def tokenize_batch(batch: dict, tokenizer, prompt_column: str, response_column: str | None,
                   train_on_prompt: bool = False) -> dict:
    """Batched ``map`` function: ``input_ids`` = prompt + response + eos, ``labels`` masked over the prompt."""
    eos = tokenizer.eos_token_id
    if response_column is None:
        ids = [x + [eos] for x in _encode(tokenizer, [_text(t) for t in batch[prompt_column]])]
        return {"input_ids": ids, "labels": [list(x) for x in ids]}
    pairs = [format_example(_text(p), _text(r)) for p, r in zip(batch[prompt_column], batch[response_column])]
    prompt_ids = _encode(tokenizer, [p for p, _ in pairs])
    response_ids = _encode(tokenizer, [r for _, r in pairs])
    input_ids, labels = [], []
    for p, r in zip(prompt_ids, response_ids):
        r = r + [eos]
        input_ids.append(p + r)
        labels.append((p if train_on_prompt else [IGNORE_INDEX] * len(p)) + r)
    return {"input_ids": input_ids, "labels": labels}


def _stats(dataset: datasets.Dataset | None, padding_tokens: int = 0) -> dict:
    """Real tokens (padding excluded) and tokens with a label."""
    if dataset is None or len(dataset) == 0:
        return {"tokens": 0, "loss_tokens": 0}
    labels = _flat(dataset, "labels")
    if "attention_mask" in dataset.column_names:
        tokens = int(_flat(dataset, "attention_mask").sum())
    else:
        tokens = len(labels) - padding_tokens
    return {"tokens": tokens, "loss_tokens": int((labels != IGNORE_INDEX).sum())}


def _fingerprint(*parts) -> str:
    # Given explicitly so datasets does not pickle and hash the tokenizer on every map call.
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _tokenize(raw, tokenizer, columns, *, max_seq_length, packing, train_on_prompt):
    if raw is None:
        return None, {}
    key = (raw._fingerprint, tokenizer.name_or_path, len(tokenizer), columns, train_on_prompt)
    tokenized = raw.map(tokenize_batch, batched=True, batch_size=1000, remove_columns=raw.column_names,
                        features=FEATURES, keep_in_memory=True, new_fingerprint=_fingerprint("tok", *key),
                        desc="Tokenizing", fn_kwargs=dict(tokenizer=tokenizer, prompt_column=columns[0],
                                                          response_column=columns[1], train_on_prompt=train_on_prompt))
    mode = packing_mode(packing)
    if mode == "stream":
        return pack(tokenized, max_seq_length, tokenizer.pad_token_id)
    if mode in ("bfd", "bfd_leaky"):
        return pack_best_fit(tokenized, max_seq_length, tokenizer.pad_token_id, boundaries=mode == "bfd")
    lengths = pc.list_value_length(tokenized.with_format("arrow")[:]["input_ids"]).to_numpy()
    padded = tokenized.map(pad_batch, batched=True, batch_size=1000, keep_in_memory=True, desc="Padding",
                           features=datasets.Features({**FEATURES, "attention_mask": FEATURES["labels"]}),
                           new_fingerprint=_fingerprint("pad", *key, max_seq_length),
                           fn_kwargs=dict(max_seq_length=max_seq_length, pad_token_id=tokenizer.pad_token_id))
    # Examples cut before their response has no label left: a 0/0 loss, so they are dropped.
    has_label = (_flat(padded, "labels").reshape(len(padded), max_seq_length) != IGNORE_INDEX).any(axis=1)
    kept = padded if has_label.all() else padded.select(np.flatnonzero(has_label))
    return kept, {"truncated_examples": int((lengths > max_seq_length).sum()), "dropped_examples": int((~has_label).sum())}


# ---- entry points -----------------------------------------------------------------------------------
def _split_eval(raw, eval_fraction: float, max_eval_examples: int, seed: int):
    """(train, eval) from one seeded permutation; both keep that permuted order."""
    order = np.random.default_rng(seed).permutation(len(raw))
    if eval_fraction <= 0 or max_eval_examples <= 0:
        return raw.select(order), None
    n = len(raw)
    n_eval = min(max_eval_examples, max(round(n * eval_fraction), min(MIN_EVAL_EXAMPLES, n // 10), 1))
    if n - n_eval < 1:
        raise UserError(f"the dataset has {n} example(s), too few to hold out an eval split; "
                        "add data or pass eval_fraction=0")
    # select() keeps an index mapping in memory; train_test_split would try to write index files
    # next to a cached dataset's arrow files.
    return raw.select(order[n_eval:]), raw.select(order[:n_eval])


def build_datasets(tokenizer, *, dataset: str | None = None, dataset_config: str | None = None,
                   dataset_split: str = "train", data_dir: str | Path | None = None, text_column: str | None = None,
                   max_seq_length: int = 256, packing: str | bool = DEFAULT_PACKING, train_on_prompt: bool = False,
                   eval_fraction: float = 0.02, max_eval_examples: int = 500, seed: int = 42,
                   max_train_examples: int | None = None,
                   eval_packing: str = DEFAULT_EVAL_PACKING) -> tuple[datasets.Dataset, datasets.Dataset | None, dict]:
    """(train, eval, info): ``input_ids`` and ``labels``, int64, plus ``attention_mask`` when not packed and
    ``position_ids`` when packed with boundaries (see ``PACKING_MODES``). The training rows follow ``packing``,
    the held-out rows ``eval_packing`` (``EVAL_PACKING_MODES``: by default whole examples kept apart, so the eval
    loss is the loss of each problem alone, as generation sees it, whatever the training rows).

    The eval split is the source's own (validation/test of a DatasetDict or of side-by-side files) or
    else ``eval_fraction`` of the examples (at least min(10, n/10), at most ``max_eval_examples``) held
    out with ``seed``; ``eval`` is None when ``eval_fraction`` is 0 and the source has none. Training
    examples are shuffled with ``seed`` before ``max_train_examples`` is applied, so a subset of a
    sorted dataset is still a random one. ``info`` is JSON-able: source, columns, template, counts, tokens.
    """
    if max_seq_length < 2:
        raise UserError(f"max_seq_length must be at least 2, not {max_seq_length}")
    train_raw, eval_raw, source = load_source(dataset, dataset_config, dataset_split, data_dir)
    columns = resolve_columns(train_raw.column_names, text_column)
    if eval_raw is not None:
        resolve_columns(eval_raw.column_names, ",".join(c for c in columns if c))
        eval_raw = eval_raw.select(range(min(len(eval_raw), max_eval_examples)))
        source["eval"] = f"the source's {source['eval_split']!r} split"
        train_raw, _ = _split_eval(train_raw, 0, 0, seed)  # still shuffled, for max_train_examples
    else:
        train_raw, eval_raw = _split_eval(train_raw, eval_fraction, max_eval_examples, seed)
        source["eval"] = None if eval_raw is None else f"{len(eval_raw)} examples held out of train with seed {seed}"
    if max_train_examples is not None:
        train_raw = train_raw.select(range(min(len(train_raw), max_train_examples)))

    settings = dict(max_seq_length=max_seq_length, packing=packing_mode(packing), train_on_prompt=train_on_prompt)
    eval_mode = eval_packing_mode(eval_packing, packing)
    train, train_extra = _tokenize(train_raw, tokenizer, columns, **settings)
    eval_, eval_extra = _tokenize(eval_raw, tokenizer, columns, **{**settings, "packing": eval_mode})
    if len(train) == 0:
        cut = train_extra.get("dropped_examples", 0)
        why = (f": all {cut} examples were cut to {max_seq_length} tokens before their response began"
               if cut and cut == len(train_raw) else "")
        raise UserError(f"no training sequence has a token to learn from{why}; raise --max_seq_length or check the "
                        "columns")
    info = {
        "source": source,
        "columns": {"prompt": columns[0], "response": columns[1]} if columns[1] else {"text": columns[0]},
        "prompt_template": PROMPT_TEMPLATE if columns[1] else None,
        "eos_token": tokenizer.eos_token, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
        "seed": seed, "eval_fraction": eval_fraction, **settings, "eval_packing": eval_packing,
        "eval_rows": eval_mode,
        "counts": {"train_examples": len(train_raw), "eval_examples": 0 if eval_raw is None else len(eval_raw),
                   "train_sequences": len(train), "eval_sequences": 0 if eval_ is None else len(eval_)},
        "tokens": {"train": {**_stats(train, train_extra.get("padding_tokens", 0)), **train_extra},
                   "eval": {**_stats(eval_, eval_extra.get("padding_tokens", 0)), **eval_extra}},
    }
    return train, eval_, info


def describe_data(info: dict) -> str:
    """One line for the run log: examples -> rows for each split, padding, and what was truncated or dropped.

    >>> describe_data({"packing": "bfd", "eval_rows": "bfd", "max_seq_length": 256,
    ...     "counts": {"train_examples": 900, "train_sequences": 300, "eval_examples": 20, "eval_sequences": 8},
    ...     "tokens": {"train": {"tokens": 75000, "padding_tokens": 1800, "truncated_examples": 3}, "eval": {}}})
    'data: 900 training examples -> 300 rows of 256 tokens (bfd: whole examples, kept apart; 2.3% padding); 20 held out -> 8 rows (bfd); 3 training examples longer than 256 tokens were truncated (raise --max_seq_length to keep them whole)'
    """
    counts, train = info["counts"], info["tokens"]["train"]
    length, mode = info["max_seq_length"], info["packing"]
    line = (f"data: {counts['train_examples']:,} training examples -> {counts['train_sequences']:,} rows of {length} "
            f"tokens ({mode}: {PACKING_WORDS[mode]}; {padding_fraction(info):.1%} padding)")
    if counts["eval_examples"]:
        line += (f"; {counts['eval_examples']:,} held out -> {counts['eval_sequences']:,} rows "
                 f"({info.get('eval_rows', mode)})")
    if train.get("truncated_examples"):
        line += (f"; {train['truncated_examples']:,} training examples longer than {length} tokens were truncated "
                 "(raise --max_seq_length to keep them whole)")
    if train.get("dropped_examples"):
        line += f"; {train['dropped_examples']:,} dropped (no response token within the first {length})"
    return line


def load_eval_problems(dataset: str | None, split: str = "test", data_dir: str | Path | None = None,
                       limit: int | None = None, dataset_config: str | None = None) -> list[dict]:
    """``[{"question", "answer"}]`` from bundled-math, a Hub dataset (GSM8K: config "main" implied) or local files."""
    if data_dir is not None:
        raw, _, _ = load_local(data_dir, split)
    elif dataset in (None, BUNDLED):
        raw = load_bundled_math(split)
    else:
        raw = _load_hub(dataset, dataset_config or DEFAULT_CONFIGS.get(dataset), split)
    missing = [c for c in ("question", "answer") if c not in raw.column_names]
    if missing:
        raise UserError(f"evaluation needs question and answer columns but {missing[0]!r} is missing; "
                        f"the dataset's columns are: {', '.join(raw.column_names)}")
    if limit is not None:
        raw = raw.select(range(min(len(raw), limit)))
    return [{"question": q, "answer": a} for q, a in zip(raw["question"], raw["answer"])]
