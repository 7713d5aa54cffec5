"""The training data pipeline: sources, columns, masking, packing, eval split, determinism, errors."""

import json
import shutil
from pathlib import Path

import datasets
import pytest
import torch

from mamba_trainer.data import (IGNORE_INDEX, PROMPT_TEMPLATE, build_datasets, format_example,
                                load_eval_problems, local_data_path, resolve_columns)
from mamba_trainer.errors import UserError
from mamba_trainer.tokenizer import load_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "data"
GSM8K = FIXTURES / "gsm8k_sample.jsonl"
MATHINSTRUCT = FIXTURES / "mathinstruct_sample.json"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("bundled")


def rows(path):
    text = Path(path).read_text()
    return json.loads(text) if str(path).endswith(".json") else [json.loads(line) for line in text.splitlines()]


def test_format_example_uses_the_documented_template():
    assert format_example("What is 2+2?", "2+2 = <<2+2=4>>4\n#### 4") == (
        "Question: What is 2+2?\nAnswer: ", "2+2 = <<2+2=4>>4\n#### 4")
    assert PROMPT_TEMPLATE == "Question: {prompt}\nAnswer: "


def test_response_only_labels_decode_to_response_plus_eos(tok):
    train, _, info = build_datasets(tok, data_dir=GSM8K, packing=False, eval_fraction=0, max_seq_length=512)
    by_response = {r["answer"]: r["question"] for r in rows(GSM8K)}
    assert len(train) == len(by_response) and set(train.column_names) == {"input_ids", "labels", "attention_mask"}
    for ex in train:
        n = sum(ex["attention_mask"])
        ids, labels = ex["input_ids"][:n], ex["labels"][:n]
        start = next(i for i, x in enumerate(labels) if x != IGNORE_INDEX)
        assert all(x == IGNORE_INDEX for x in labels[:start]) and labels[start:] == ids[start:]
        assert ex["labels"][n:] == [IGNORE_INDEX] * (len(ex["labels"]) - n)
        response = tok.decode(labels[start:])
        assert response.endswith(tok.eos_token)
        question = by_response[response[: -len(tok.eos_token)]]
        assert tok.decode(ids[:start]) == PROMPT_TEMPLATE.format(prompt=question)
    assert info["columns"] == {"prompt": "question", "response": "answer"}
    assert info["prompt_template"] == PROMPT_TEMPLATE and info["source"]["kind"] == "files"


def test_unpacked_truncation_drops_examples_left_without_labels(tok):
    train, _, info = build_datasets(tok, data_dir=GSM8K, packing=False, eval_fraction=0, max_seq_length=48)
    stats = info["tokens"]["train"]
    assert stats["truncated_examples"] == 12 and stats["dropped_examples"] > 0
    assert len(train) == 12 - stats["dropped_examples"] == info["counts"]["train_sequences"]
    assert all(len(ids) == 48 for ids in train["input_ids"])
    assert all(any(x != IGNORE_INDEX for x in labels) for labels in train["labels"])


def test_train_on_prompt_and_plain_text_train_on_everything(tok, tmp_path):
    train, _, _ = build_datasets(tok, data_dir=GSM8K, packing=False, train_on_prompt=True, eval_fraction=0)
    for ex in train:
        n = sum(ex["attention_mask"])
        assert ex["labels"][:n] == ex["input_ids"][:n]
    (tmp_path / "notes.jsonl").write_text("".join(json.dumps({"text": f"note {i}: 2+{i}"}) + "\n" for i in range(20)))
    text_train, _, info = build_datasets(tok, data_dir=tmp_path, eval_fraction=0, max_seq_length=16)
    assert info["columns"] == {"text": "text"} and info["prompt_template"] is None
    assert info["tokens"]["train"]["loss_tokens"] == info["tokens"]["train"]["tokens"] > 0


def test_packing_fixed_blocks_and_no_token_lost(tok):
    common = dict(data_dir=GSM8K, eval_fraction=0, seed=5)
    flat, _, _ = build_datasets(tok, packing=False, max_seq_length=1024, **common)
    # Same seed, same order: the packed stream is the per-example sequences back to back, masks included.
    ids = [x for ex in flat for x, m in zip(ex["input_ids"], ex["attention_mask"]) if m]
    labels = [x for ex in flat for x, m in zip(ex["labels"], ex["attention_mask"]) if m]
    assert ids.count(tok.eos_token_id) == len(flat) == len(GSM8K.read_text().splitlines())
    for size in (64, 128):
        packed, _, info = build_datasets(tok, packing=True, max_seq_length=size, **common)
        stats = info["tokens"]["train"]
        assert set(packed.column_names) == {"input_ids", "labels"}
        assert packed.with_format("torch")[0]["labels"].dtype == torch.int64  # what cross-entropy needs
        assert all(len(block) == size for block in packed["input_ids"])
        pad = stats["padding_tokens"]
        assert pad < size and stats["loss_tokens"] == sum(x != IGNORE_INDEX for x in labels)
        assert stats["tokens"] + size * stats["dropped_blocks"] == len(ids)
        padded_ids, padded_labels = ids + [tok.pad_token_id] * pad, labels + [IGNORE_INDEX] * pad
        blocks = [(padded_ids[i:i + size], padded_labels[i:i + size]) for i in range(0, len(padded_ids), size)]
        # Blocks made only of prompt tokens (possible at 64 tokens) have no loss and are dropped.
        kept = [b for b in blocks if any(x != IGNORE_INDEX for x in b[1])]
        assert stats["dropped_blocks"] == len(blocks) - len(kept)
        assert [list(b) for b in zip(packed["input_ids"], packed["labels"])] == [list(b) for b in kept]
    assert stats["dropped_blocks"] == 0  # at 128 every block holds some response


def _examples(dataset, with_positions: bool):
    """The (input_ids, labels) of each example in packed rows, split where position_ids restart (pads dropped)."""
    out = []
    for row in dataset:
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]
        for a, b in zip(starts, starts[1:]):
            out.append((row["input_ids"][a:b], row["labels"][a:b]))
    return out


def test_best_fit_packing_keeps_every_example_whole(tok):
    """bfd: each example lies whole in one row, position_ids restart at 0 at each one (and at the padding), the
    first token's label is -100 (predicting it from the previous example is no part of either), nothing is lost,
    and the rows are filled to within 5% on the bundled problems at 256 tokens."""
    common = dict(eval_fraction=0, seed=5, max_train_examples=1500)
    flat, _, _ = build_datasets(tok, packing="none", max_seq_length=256, **common)
    alone = sorted((tuple(x for x, m in zip(ex["input_ids"], ex["attention_mask"]) if m),
                    tuple(x for x, m in zip(ex["labels"], ex["attention_mask"]) if m)) for ex in flat)
    packed, _, info = build_datasets(tok, packing="bfd", max_seq_length=256, **common)
    assert set(packed.column_names) == {"input_ids", "labels", "position_ids"}
    assert all(len(r) == 256 for r in packed["position_ids"]) and len(packed) < len(flat) / 2
    pieces = [(ids, labels) for ids, labels in _examples(packed, True) if ids[0] != tok.pad_token_id]
    assert sorted((tuple(i), tuple([alone_label] + l[1:]))
                  for (i, l), alone_label in zip(pieces, [IGNORE_INDEX] * len(pieces))) == [
        (i, (IGNORE_INDEX, *l[1:])) for i, l in alone]
    assert all(labels[0] == IGNORE_INDEX for _, labels in pieces)
    stats = info["tokens"]["train"]
    assert stats["padding_tokens"] / (256 * len(packed)) <= 0.05 and stats["truncated_examples"] == 0
    assert stats["tokens"] == sum(len(i) for i, _ in alone)
    leaky, _, _ = build_datasets(tok, packing="bfd_leaky", max_seq_length=256, **common)
    assert leaky.column_names == ["input_ids", "labels"] and leaky["input_ids"] == packed["input_ids"]


def test_best_fit_packing_at_1024_tokens_and_truncation(tok):
    """GSM8K-shaped rows (problems of ~100-250 tokens) fill 1,024-token rows to within 5%; an example longer than
    a row is truncated and counted, one with no label left is dropped and counted."""
    packed, _, info = build_datasets(tok, packing="bfd", max_seq_length=1024, eval_fraction=0, seed=1,
                                     max_train_examples=2000)
    stats = info["tokens"]["train"]
    assert stats["padding_tokens"] / (1024 * len(packed)) <= 0.05
    short, _, info = build_datasets(tok, data_dir=GSM8K, packing="bfd", max_seq_length=48, eval_fraction=0)
    stats = info["tokens"]["train"]
    assert stats["truncated_examples"] > 0 and stats["dropped_examples"] > 0
    assert len(short) > 0 and all(len(i) <= 48 for i, _ in _examples(short, True))


def test_packing_modes_and_their_old_yes_no_names():
    from mamba_trainer.data import packing_mode

    assert [packing_mode(v) for v in (True, False, "TRUE", "false", "bfd", "none")] == [
        "stream", "none", "stream", "none", "bfd", "none"]
    with pytest.raises(UserError, match="must be one of bfd, bfd_leaky, stream, none"):
        packing_mode("best")


def test_held_out_rows_keep_each_example_alone_whatever_the_training_rows(tok):
    """--eval_packing: by default the held-out split is whole examples with position_ids (each alone in the model)
    even when training rows are stream-packed; "none" pads them one per row (the same examples and labels); "same"
    packs them as the training rows (the old, leaky eval). info records the setting and the rows it gave."""
    common = dict(max_train_examples=200, max_eval_examples=40, max_seq_length=256, seed=3)
    train, eval_, info = build_datasets(tok, packing="stream", **common)
    assert "position_ids" not in train.column_names and "position_ids" in eval_.column_names
    assert (info["packing"], info["eval_packing"], info["eval_rows"]) == ("stream", "bfd", "bfd")
    _, alone, _ = build_datasets(tok, packing="stream", eval_packing="none", **common)
    assert "attention_mask" in alone.column_names and len(alone) == info["counts"]["eval_examples"]
    examples = sorted(tuple(x for x, m in zip(ex["input_ids"], ex["attention_mask"]) if m) for ex in alone)
    assert sorted(tuple(i) for i, _ in _examples(eval_, True) if i[0] != tok.pad_token_id) == examples
    label_count = sum(x != IGNORE_INDEX for ex in alone for x in ex["labels"])
    assert sum(x != IGNORE_INDEX for ex in eval_ for x in ex["labels"]) == label_count  # every scored token kept
    _, leaky, info = build_datasets(tok, packing="stream", eval_packing="same", **common)
    assert leaky.column_names == ["input_ids", "labels"] and info["eval_rows"] == "stream"
    with pytest.raises(UserError, match="--eval_packing 'leaky': must be one of bfd, none, same"):
        build_datasets(tok, eval_packing="leaky", **common)


def test_rows_too_short_for_any_response_say_why(tok):
    with pytest.raises(UserError, match="all 30 examples were cut to 8 tokens before their response began; raise "
                                        "--max_seq_length"):
        build_datasets(tok, max_seq_length=8, max_train_examples=30, eval_fraction=0)


def test_the_cli_defaults_are_the_library_defaults():
    from mamba_trainer.args import DataArguments
    from mamba_trainer.packing import DEFAULT_EVAL_PACKING, DEFAULT_PACKING

    assert (DataArguments.packing, DataArguments.eval_packing) == (DEFAULT_PACKING, DEFAULT_EVAL_PACKING)


def test_same_seed_same_data_other_seed_other_order(tok):
    kwargs = dict(max_train_examples=300, max_eval_examples=50, max_seq_length=128)
    a_train, a_eval, a_info = build_datasets(tok, seed=1, **kwargs)
    b_train, b_eval, b_info = build_datasets(tok, seed=1, **kwargs)
    assert a_train["input_ids"] == b_train["input_ids"] and a_train["labels"] == b_train["labels"]
    assert a_eval["input_ids"] == b_eval["input_ids"] and a_info == b_info
    c_train, _, _ = build_datasets(tok, seed=2, **kwargs)
    assert c_train["input_ids"] != a_train["input_ids"]
    json.dumps(a_info)  # the run directory stores it


def test_bundled_is_the_default_with_a_held_out_eval(tok):
    train, eval_, info = build_datasets(tok, max_train_examples=200, max_seq_length=128)
    assert info["source"]["kind"] == "bundled" and info["source"]["dataset"] == "bundled-math"
    assert info["counts"]["train_examples"] == 200
    assert info["counts"]["eval_examples"] == 400  # 2% of 20,000, below max_eval_examples
    assert len(eval_) == info["counts"]["eval_sequences"] > 0
    assert info["tokens"]["train"]["tokens"] == len(train) * 128 - info["tokens"]["train"]["padding_tokens"]
    assert 0 < info["tokens"]["train"]["loss_tokens"] < info["tokens"]["train"]["tokens"]


@pytest.mark.parametrize("path, columns", [(GSM8K, ("question", "answer")), (MATHINSTRUCT, ("instruction", "output"))],
                         ids=["gsm8k", "mathinstruct"])
def test_columns_detected_on_fixtures(tok, path, columns):
    _, eval_, info = build_datasets(tok, data_dir=path, max_seq_length=128)
    assert (info["columns"]["prompt"], info["columns"]["response"]) == columns
    assert info["counts"]["train_examples"] + info["counts"]["eval_examples"] == len(rows(path))
    assert info["counts"]["eval_examples"] == 1 and eval_ is not None


def test_explicit_and_bad_text_columns():
    assert resolve_columns(["source", "instruction", "output"], "source,output") == ("source", "output")
    assert resolve_columns(["body"], "body") == ("body", None)
    with pytest.raises(UserError) as err:
        resolve_columns(["source", "instruction", "output"], "question,output")
    assert "\n" not in str(err.value) and "'question'" in str(err.value)
    assert "source, instruction, output" in str(err.value)
    with pytest.raises(UserError, match="its columns are: a, b"):
        resolve_columns(["a", "b"])
    with pytest.raises(UserError, match="PROMPT,RESPONSE"):
        resolve_columns(["a", "b", "c"], "a,b,c")


def test_missing_column_through_build(tok):
    with pytest.raises(UserError, match="column 'prompt' is not in the dataset; its columns are: question, answer"):
        build_datasets(tok, data_dir=GSM8K, text_column="prompt,answer")


def test_missing_data_dir(tok, tmp_path):
    with pytest.raises(UserError) as err:
        build_datasets(tok, data_dir=tmp_path / "nowhere")
    assert "\n" not in str(err.value) and "nowhere does not exist" in str(err.value)
    with pytest.raises(UserError, match="no readable data files"):
        build_datasets(tok, data_dir=tmp_path)


def test_save_to_disk_dataset_and_datasetdict_with_test_split(tok, tmp_path):
    data = datasets.Dataset.from_list(rows(GSM8K))
    data.save_to_disk(str(tmp_path / "single"))
    _, eval_, info = build_datasets(tok, data_dir=tmp_path / "single", max_seq_length=128)
    assert info["source"]["kind"] == "save_to_disk" and info["counts"]["eval_examples"] == 1

    datasets.DatasetDict({"train": data.select(range(9)), "test": data.select(range(9, 12))}).save_to_disk(str(tmp_path / "dict"))
    train, eval_, info = build_datasets(tok, data_dir=tmp_path / "dict", packing=False, max_seq_length=256)
    assert info["source"]["eval_split"] == "test"
    assert (info["counts"]["train_examples"], info["counts"]["eval_examples"]) == (9, 3) and len(eval_) == 3
    with pytest.raises(UserError, match="has splits train, test, not 'validation'"):
        build_datasets(tok, data_dir=tmp_path / "dict", dataset_split="validation")


def test_jsonl_folder_with_train_and_test_files(tok, tmp_path):
    lines = GSM8K.read_text().splitlines(keepends=True)
    (tmp_path / "train.jsonl").write_text("".join(lines[:10]))
    (tmp_path / "test.jsonl").write_text("".join(lines[10:]))
    _, _, info = build_datasets(tok, data_dir=tmp_path, max_seq_length=128)
    assert info["source"]["eval_split"] == "test" and info["counts"]["eval_examples"] == 2
    assert len(load_eval_problems(None, "test", data_dir=tmp_path)) == 2


def test_unreachable_hub_dataset_names_it_and_the_data_dir_fix(tok, hub_offline):
    with pytest.raises(UserError) as err:
        build_datasets(tok, dataset="openai/gsm8k")
    message = str(err.value)
    assert "\n" not in message and "'openai/gsm8k'" in message and "--data_dir" in message
    assert "config main" in message  # GSM8K's required config is filled in
    with pytest.raises(UserError, match="'openai/gsm8k'"):
        load_eval_problems("openai/gsm8k", "test")


def test_load_eval_problems(tmp_path):
    bundled = load_eval_problems("bundled-math", "test", limit=5)
    assert len(bundled) == 5 and set(bundled[0]) == {"question", "answer"}
    assert bundled == load_eval_problems(None, "test", limit=5)
    local = load_eval_problems(None, "train", data_dir=GSM8K)
    assert local == [{"question": r["question"], "answer": r["answer"]} for r in rows(GSM8K)]
    with pytest.raises(UserError, match="'question' is missing; the dataset's columns are: source, instruction, output"):
        load_eval_problems(None, "train", data_dir=MATHINSTRUCT)
    shutil.copy(GSM8K, tmp_path / "mine.jsonl")
    assert len(load_eval_problems(None, "test", data_dir=tmp_path / "mine.jsonl", limit=3)) == 3


def test_empty_jsonl_is_one_line_error(tok, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match="is empty") as info:
        build_datasets(tok, data_dir=str(empty), max_seq_length=64)
    assert "\n" not in str(info.value)


def test_dataset_names_a_local_file_or_folder_like_data_dir(tok, tmp_path):
    by_flag = build_datasets(tok, data_dir=str(GSM8K), max_seq_length=64)
    by_name = build_datasets(tok, dataset=str(GSM8K), max_seq_length=64)
    assert by_name[0]["input_ids"] == by_flag[0]["input_ids"]
    assert local_data_path("openai/gsm8k") is None and local_data_path(str(FIXTURES)) == FIXTURES
    with pytest.raises(UserError, match="no such file or folder"):
        local_data_path("./missing.jsonl")
