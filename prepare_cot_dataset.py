"""Build a chain-of-thought math SFT set: MathInstruct's CoT rows (+ GSM8K train), each ending in ``#### N``.

    python prepare_cot_dataset.py --dataset TIGER-Lab/MathInstruct --output ./data/mathinstruct_cot
    python prepare_cot_dataset.py --dataset TIGER-Lab/MathInstruct --mix_gsm8k openai/gsm8k --output ./data/cot_mix
    python prepare_cot_dataset.py --data_files tests/fixtures/cot/mathinstruct.json --output /tmp/x \\
        --mix_gsm8k tests/fixtures/cot/gsm8k_train.jsonl

Without Hub access, download ``MathInstruct.json`` (and GSM8K's ``train.jsonl``) and pass the paths.
Program-of-thought rows (``data/PoT/...`` sources, or code under a CoT source) are dropped; every kept
solution ends in exactly one ``#### N`` line (``mamba_trainer.answers.format_final_answer``). The output
folder is ``Dataset.save_to_disk`` with columns ``instruction, output, source, final_answer`` (pass it to
the trainer's ``--data_dir``), plus ``stats.json``: rows in, kept, dropped per reason, per source.
Duplicates (normalized instruction + answer) are dropped; a MathInstruct row that duplicates a mixed-in
GSM8K row is dropped in favour of the GSM8K copy. The per-row logic is in ``mamba_trainer/cot.py``.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from typing import List, Optional

from configs.text import first_line
from mamba_trainer.errors import UserError, run_cli

GSM8K_HUB_NAMES = ("openai/gsm8k", "gsm8k")


@dataclass
class PrepareCotArguments:
    output: str = field(metadata={"help": "Folder to write (Dataset.save_to_disk) plus stats.json in it."})
    dataset: Optional[str] = field(
        default=None, metadata={"help": "Hub dataset with MathInstruct's schema (e.g. TIGER-Lab/MathInstruct), or a local file/folder."}
    )
    data_files: Optional[str] = field(
        default=None, metadata={"help": "Local JSON/JSONL file(s) with source/instruction/output, comma-separated."}
    )
    mix_gsm8k: Optional[str] = field(
        default=None, metadata={"help": "Add GSM8K train: 'openai/gsm8k' or local JSON/JSONL path(s), question/answer."}
    )
    limit: Optional[int] = field(
        default=None, metadata={"help": "Read only the first N rows of each input (MathInstruct, GSM8K): quick runs."}
    )
    keep_non_numeric: bool = field(
        default=False, metadata={"help": "Keep rows whose answer is not a number ('The answer is (B)')."}
    )
    keep_calculator_annotations: bool = field(
        default=False, metadata={"help": "Keep GSM8K's <<48/2=24>> calculator annotations (in GSM8K and MathInstruct)."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing output dataset folder."})


def _split_paths(value: str) -> List[str]:
    return [os.path.expanduser(p.strip()) for p in value.split(",") if p.strip()]


def _load_named(name: str, config: Optional[str], flag: str):
    """A dataset name as every mamba_trainer CLI reads it: a local file, folder or comma list of files, else a
    Hub id (the one rule is ``mamba_trainer.data.local_data_path``)."""
    from mamba_trainer.data import load_local, local_data_path

    paths = _split_paths(name)
    if len(paths) > 1:
        return _load_files(paths, flag)
    local = local_data_path(name)
    if local is None:
        return _load_hub(name, config, flag)
    if local.is_file():
        return _load_files([str(local)], flag)
    return load_local(local, "train")[0]


def _load_files(paths: List[str], flag: str):
    from mamba_trainer.data import load_data_files

    return load_data_files(paths, "json", flag)


def _load_hub(name: str, config: Optional[str], flag: str):
    import datasets

    try:
        return datasets.load_dataset(name, config, split="train")
    except OSError as exc:  # ConnectionError (offline, unreachable) and FileNotFoundError (no such dataset)
        cause = first_line(exc)
        local_flag = "--data_files" if flag == "--dataset" else flag
        raise UserError(
            f"{flag}: could not load '{name}' from the Hugging Face Hub ({cause}); "
            f"download it and pass the local JSON/JSONL file instead ({local_flag} PATH)"
        ) from exc


def _require_columns(ds, needed, flag: str):
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise UserError(
            f"{flag}: missing column(s) {missing}; found {ds.column_names}, need {list(needed)}"
        )
    return ds


def _limit(ds, limit: Optional[int]):
    return ds if limit is None else ds.select(range(min(limit, len(ds))))


def load_inputs(args: PrepareCotArguments):
    """(MathInstruct-schema dataset, GSM8K dataset or None), validated and limited."""
    if bool(args.dataset) == bool(args.data_files):
        raise UserError("pass exactly one of --dataset NAME (e.g. TIGER-Lab/MathInstruct) or --data_files PATH")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be a positive number of rows, got {args.limit}")
    if args.data_files:
        main_ds = _load_files(_split_paths(args.data_files), "--data_files")
    else:
        main_ds = _load_named(args.dataset, None, "--dataset")
    flag = "--data_files" if args.data_files else "--dataset"
    main_ds = _limit(_require_columns(main_ds, ("instruction", "output"), flag), args.limit)
    gsm8k = None
    if args.mix_gsm8k:
        config = "main" if args.mix_gsm8k in GSM8K_HUB_NAMES else None
        gsm8k = _load_named(args.mix_gsm8k, config, "--mix_gsm8k")
        gsm8k = _limit(_require_columns(gsm8k, ("question", "answer"), "--mix_gsm8k"), args.limit)
    return main_ds, gsm8k


def _check_output_dir(path: str, overwrite: bool) -> bool:
    """Whether an old dataset folder at ``path`` must be removed before saving (checked before any work)."""
    if not os.path.exists(path) or (os.path.isdir(path) and not os.listdir(path)):
        return False
    if not overwrite:
        raise UserError(f"--output {path} already exists and is not empty; pass --overwrite or another folder")
    if not os.path.isfile(os.path.join(path, "state.json")):
        raise UserError(f"--output {path} is not a saved dataset folder; refusing to delete it, pick another folder")
    return True


def _keys(ds) -> list:
    from mamba_trainer.cot import dedupe_key

    cols = ds.select_columns(["instruction", "final_answer"]).to_dict()
    pairs = zip(cols["instruction"], cols["final_answer"])
    return [dedupe_key({"instruction": i, "final_answer": a}) for i, a in pairs]


def build(args: PrepareCotArguments):
    """The cleaned dataset and its stats dict. Maps never reuse datasets' cache: a changed rule must apply."""
    import datasets

    from mamba_trainer.cot import OUTPUT_COLUMNS, mark_duplicates, summarize, tag_example

    main_ds, gsm8k = load_inputs(args)
    tagged = main_ds.map(
        tag_example, remove_columns=main_ds.column_names, desc="MathInstruct rows", load_from_cache_file=False,
        fn_kwargs={"keep_non_numeric": args.keep_non_numeric,
                   "keep_calculator_annotations": args.keep_calculator_annotations},
    )
    parts, gsm8k_stats, gsm8k_keys = [], None, set()
    if gsm8k is not None:
        gsm8k_tagged = gsm8k.map(
            tag_example, remove_columns=gsm8k.column_names, desc="GSM8K rows", load_from_cache_file=False,
            fn_kwargs={"gsm8k": True, "keep_calculator_annotations": args.keep_calculator_annotations},
        )
        keys = _keys(gsm8k_tagged)
        reasons = mark_duplicates(keys, list(gsm8k_tagged["drop_reason"]))
        gsm8k_keys = {k for k, r in zip(keys, reasons) if not r}
        gsm8k_stats = summarize(gsm8k_tagged["source"], reasons)
        del gsm8k_stats["per_source"]
        parts.append(gsm8k_tagged.select([i for i, r in enumerate(reasons) if not r]))
    keys = _keys(tagged)
    reasons = mark_duplicates(keys, list(tagged["drop_reason"]), protected=gsm8k_keys)
    stats = summarize(tagged["source"], reasons)
    parts.insert(0, tagged.select([i for i, r in enumerate(reasons) if not r]))
    out = datasets.concatenate_datasets(parts).select_columns(list(OUTPUT_COLUMNS))
    stats.update(
        inputs={"dataset": args.dataset, "data_files": args.data_files, "mix_gsm8k": args.mix_gsm8k},
        options={k: v for k, v in asdict(args).items() if k not in ("output", "dataset", "data_files", "mix_gsm8k")},
        gsm8k=gsm8k_stats, gsm8k_mixed=gsm8k_stats["kept"] if gsm8k_stats else 0, rows_out=len(out),
    )
    return out, stats


def run(argv: Optional[List[str]]) -> int:
    from transformers import HfArgumentParser

    from mamba_trainer.jsonio import write_json

    parser = HfArgumentParser(PrepareCotArguments)
    args, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:
        raise UserError(f"unknown argument(s) {unknown}; see python prepare_cot_dataset.py --help")
    replace = _check_output_dir(args.output, args.overwrite)
    dataset, stats = build(args)
    if replace:
        shutil.rmtree(args.output)
    dataset.save_to_disk(args.output)
    write_json(os.path.join(args.output, "stats.json"), stats, sort_keys=False)
    dropped = ", ".join(f"{k}={v}" for k, v in sorted(stats["dropped"].items())) or "none"
    print(f"kept {stats['kept']}/{stats['rows_in']} rows (dropped: {dropped}); "
          f"GSM8K mixed in: {stats['gsm8k_mixed']}; wrote {stats['rows_out']} rows to {args.output}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``error: <message>`` and status 2 for a user error (``mamba_trainer.errors.run_cli``), else ``run``'s."""
    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
