"""Evaluate checkpoints on GSM8K-style math: greedy or self-consistency (maj@K), one model or a voting ensemble.

    mamba-eval --model checkpoints/<run>/final --dataset openai/gsm8k --split test --limit 200
    mamba-eval --model checkpoints/<run> --dataset bundled-math --split test --limit 100      # run folder: its final/
    mamba-eval --model ckpt_a ckpt_b ckpt_c --ensemble vote --samples 5 --temperature 0.7 --seed 0
    mamba-eval --model checkpoints/<run> --dataset ./gsm8k_test.jsonl     # offline copy (or --data_dir PATH)

Each model is prompted in the format it was trained on (``prompt_template`` in its run folder's
``run_config.json``; ``data.PROMPT_TEMPLATE`` with a warning when there is none) and generates greedily, or
``--samples K`` times with ``--temperature``/``--top_p`` (seeded with ``--seed``). Answers are read with
``answers.extract_answer`` twice, as lm-evaluation-harness's gsm8k task does: **strict** (``#### N``, or
``The answer is N``) and **flexible** (else the last number).

Metrics, per model and for the ensemble, each under strict and under flexible extraction:
* ``strict`` / ``flexible``: share of problems whose answer is right: the greedy answer, or with K samples
  the majority answer (maj@K; ties go to the answer seen first; a sample with no answer casts no vote).
* ``pass@1_strict`` / ``pass@1_flexible``: mean share of right samples per problem (greedy: the accuracy).
* ``--ensemble vote``: every member's answers (greedy, or its K samples) go into one vote per problem.
Per-sample scores satisfy strict <= flexible (flexible falls back only where strict finds nothing); a
majority vote need not (the flexible vote also counts answers the strict vote ignores).

Results go to ``eval/<dataset>_<split>.json`` in the run folder of the first model (``--output`` to choose):
settings, summary, and per problem the prompt, gold answer, generations, extracted answers, correctness, votes.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .answers import extract_answer, gold_answer, is_correct, majority_vote, pass_at_1, tally
from .errors import UserError, run_cli
from .jsonio import write_json
from .rundir import FINAL_DIR, RUN_CONFIG, RunConfig, checkpoints, is_run_dir

__all__ = ["EvalArguments", "ModelSpec", "combine_members", "dataset_label", "evaluate_models", "format_table",
           "gold_answer", "main", "output_path", "resolve_model", "score_question", "summarize", "tally"]

ENSEMBLE_CHOICES = ("vote",)


@dataclass
class EvalArguments:
    model: list[str] = field(metadata={"help": "Model folder(s) (final/, checkpoint-N) or run folder(s) (their final/)."})
    dataset: str = field(default="bundled-math", metadata={
        "help": "'bundled-math' (offline), a Hub dataset such as openai/gsm8k (config 'main' implied), or a JSON/JSONL path."})
    dataset_config: str | None = field(default=None, metadata={"help": "Config name for a Hub dataset."})
    split: str = field(default="test", metadata={"help": "Split to evaluate."})
    data_dir: str | None = field(default=None, metadata={
        "help": "Local copy instead of --dataset: a save_to_disk folder, or a folder/file of JSON/JSONL (question, answer)."})
    limit: int | None = field(default=None, metadata={"help": "Evaluate only the first N problems."})
    samples: int = field(default=1, metadata={"help": "Generations per problem (K); K > 1 needs --temperature > 0."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature; 0 = greedy."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (with --temperature > 0)."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampling (same seed and settings: same samples)."})
    max_new_tokens: int = field(default=256, metadata={"help": "Longest generation, in tokens."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per generate() call (a problem's K samples count K)."})
    ensemble: str | None = field(default=None, metadata={
        "help": "'vote': the models' answers go into one majority vote per problem.", "choices": list(ENSEMBLE_CHOICES)})
    output: str | None = field(default=None, metadata={"help": "Results file (default: <run>/eval/<dataset>_<split>.json)."})
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ..."})
    exact_length_batches: bool = field(default=False, metadata={
        "help": "Batch only equal-length prompts (no padding); slower, for checking padding effects."})
    prepend_bos: bool = field(default=True, metadata={
        "help": "Start each prompt with the bos token, as packed training does (eos before every example)."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar while generating."})


@dataclass
class ModelSpec:
    """One model to evaluate: where its weights are, its run folder, and the prompt format it was trained on."""

    arg: str
    model_dir: Path
    run_dir: Path | None
    prompt_template: str
    template_source: str  # "run_config.json" or "default"
    tokenizer: str  # the folder or name load_tokenizer gets


# ---- models -------------------------------------------------------------------------------------------
def _read_run_config(run_dir: Path | None) -> RunConfig:
    if run_dir is None or not is_run_dir(run_dir):
        return RunConfig({})
    try:
        return RunConfig.read(run_dir)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"cannot read {run_dir / RUN_CONFIG} ({exc}); fix or remove it") from None


def resolve_model(arg: str) -> ModelSpec:
    """Find the model folder, run folder and prompt template for a ``--model`` argument (no weights loaded)."""
    from .data import PROMPT_TEMPLATE

    path = Path(arg).expanduser()
    if not path.exists():
        raise UserError(f"--model {arg}: no such folder; pass a model folder (final/, checkpoint-N) or a run folder")
    if (path / "config.json").is_file():
        model_dir = path
        run_dir = path.parent if is_run_dir(path.parent) else None
    elif (path / FINAL_DIR / "config.json").is_file():
        model_dir, run_dir = path / FINAL_DIR, path
    elif is_run_dir(path):
        found = checkpoints(path)  # any checkpoint-N holds weights to evaluate, whole optimizer state or not
        hint = f"pass one of its checkpoints, e.g. --model {found[-1]}" if found else "it has no checkpoint either"
        raise UserError(f"--model {arg} is a run folder without {FINAL_DIR}/ (training not finished?); {hint}")
    else:
        raise UserError(f"--model {arg} holds no model: no config.json in it or in {FINAL_DIR}/; pass a model folder "
                        "written by save_pretrained (checkpoints/<run>/final, checkpoint-N) or a run folder")
    config = _read_run_config(run_dir)
    template = config.prompt_template
    source = "run_config.json"
    if not template or "{prompt}" not in template:
        template, source = PROMPT_TEMPLATE, "default"
    if (model_dir / "tokenizer_config.json").is_file():
        tokenizer = str(model_dir)
    else:
        tokenizer = config.tokenizer or "bundled"
    return ModelSpec(arg, model_dir, run_dir, template, source, tokenizer)


# ---- scoring (pure) -----------------------------------------------------------------------------------
def score_question(gold: str | None, strict: Sequence[str | None], flexible: Sequence[str | None]) -> dict:
    """Correctness of each answer and of the majority vote, under strict and flexible extraction.

    >>> s = score_question("5", ["5", None, "7"], ["5", "7", "7"])
    >>> s["correct_strict"], s["vote_strict"], s["vote_flexible"]["answer"], s["pass@1_flexible"]
    ([True, False, False], {'answer': '5', 'count': 1, 'correct': True}, '7', 0.3333333333333333)
    """
    out: dict = {}
    for mode, answers in (("strict", list(strict)), ("flexible", list(flexible))):
        correct = [is_correct(a, gold) for a in answers]
        winner, count = majority_vote(answers)
        out[mode] = answers
        out[f"correct_{mode}"] = correct
        out[f"pass@1_{mode}"] = pass_at_1(correct)
        out[f"vote_{mode}"] = {"answer": winner, "count": count, "correct": is_correct(winner, gold)}
        out[f"votes_{mode}"] = tally(answers)
    return out


def combine_members(gold: str | None, member_scores: Sequence[dict]) -> dict:
    """The ensemble's score for one problem: all members' answers, in member order, in one vote."""
    return score_question(gold, [a for m in member_scores for a in m["strict"]],
                          [a for m in member_scores for a in m["flexible"]])


def summarize(scores: Sequence[dict], samples: int) -> dict:
    """Accuracies over problems from :func:`score_question` results (fractions in [0, 1])."""
    n = len(scores)
    if n == 0:
        raise ValueError("no scored problems to summarize")
    summary = {"n": n}
    for mode in ("strict", "flexible"):
        summary[mode] = sum(s[f"vote_{mode}"]["correct"] for s in scores) / n
    for mode in ("strict", "flexible"):
        summary[f"pass@1_{mode}"] = sum(s[f"pass@1_{mode}"] for s in scores) / n
    if samples > 1:
        for mode in ("strict", "flexible"):
            summary[f"maj@{samples}_{mode}"] = summary[mode]
    return summary


# ---- files and printing -------------------------------------------------------------------------------
def dataset_label(dataset: str | None, data_dir: str | None) -> str:
    """File-name-safe name of the evaluated data.

    >>> dataset_label("openai/gsm8k", None), dataset_label("bundled-math", None), dataset_label(None, "/d/test.jsonl")
    ('openai_gsm8k', 'bundled-math', 'test')
    """
    name = Path(data_dir).name.split(".")[0] if data_dir else (dataset or "bundled-math")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "data"


def output_path(first: ModelSpec, label: str, split: str, output: str | None) -> Path:
    """``--output``, else ``eval/<label>_<split>.json`` in the first model's run folder (or its model folder)."""
    if output:
        return Path(output).expanduser()
    return (first.run_dir or first.model_dir) / "eval" / f"{label}_{re.sub(r'[^A-Za-z0-9._-]+', '_', split)}.json"


def decoding_name(samples: int, temperature: float, top_p: float) -> str:
    if temperature <= 0:
        return "greedy"
    nucleus = f", top_p={top_p:g}" if top_p < 1 else ""
    return (f"maj@{samples}" if samples > 1 else "sample") + f" T={temperature:g}{nucleus}"


def format_table(rows: Sequence[tuple[str, dict]], decoding: str) -> str:
    """A fixed-width table: model, n, decoding, strict, flexible, pass@1 strict/flexible (percent)."""
    header = ("model", "n", "decoding", "strict", "flexible", "pass@1 strict", "pass@1 flexible")
    body = [(name, str(s["n"]), decoding, *(f"{100 * s[k]:.1f}%" for k in
                                          ("strict", "flexible", "pass@1_strict", "pass@1_flexible")))
            for name, s in rows]
    widths = [max(len(r[i]) for r in (header, *body)) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i in (0, 2) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in (header, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---- running ------------------------------------------------------------------------------------------
def check_arguments(a: EvalArguments) -> None:
    """Reject impossible settings before any model is loaded."""
    if a.samples < 1:
        raise UserError(f"--samples must be at least 1, not {a.samples}")
    if a.samples > 1 and a.temperature <= 0:
        raise UserError(f"--samples {a.samples} with --temperature {a.temperature:g} would repeat the greedy answer; "
                        "pass --temperature > 0 (e.g. 0.7) or --samples 1")
    if a.temperature < 0:
        raise UserError(f"--temperature must be >= 0 (0 = greedy), not {a.temperature:g}")
    if not 0 < a.top_p <= 1:
        raise UserError(f"--top_p must be in (0, 1], not {a.top_p:g}")
    for name in ("max_new_tokens", "batch_size"):
        if getattr(a, name) < 1:
            raise UserError(f"--{name} must be at least 1, not {getattr(a, name)}")
    if a.limit is not None and a.limit < 1:
        raise UserError(f"--limit must be at least 1, not {a.limit}")
    if a.ensemble and len(a.model) < 2:
        raise UserError(f"--ensemble {a.ensemble} needs at least two --model paths, got {len(a.model)}")


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"--device {name}: {exc}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible; use --device cpu")
    return device


def generate_for(spec: ModelSpec, questions: Sequence[str], settings, device, progress: bool = True) -> list[list[str]]:
    """Load one model and its tokenizer, and return each question's generations."""
    import torch
    from tqdm.auto import tqdm

    from .generation import build_prompt, generate_answers
    from .models import load_pretrained
    from .tokenizer import load_tokenizer

    tokenizer = load_tokenizer(spec.tokenizer, padding_side="left")
    model = load_pretrained(spec.model_dir).to(device).eval()
    prompts = [build_prompt(spec.prompt_template, q) for q in questions]
    total = len(prompts) * settings.samples
    with tqdm(total=total, desc=f"generating ({spec.arg})", unit="seq", disable=not progress,
              mininterval=1 if sys.stderr.isatty() else 10, file=sys.stderr) as bar:
        texts = generate_answers(model, tokenizer, prompts, settings, progress=bar.update)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return texts


def evaluate_models(a: EvalArguments, specs: Sequence[ModelSpec], problems: Sequence[dict]) -> dict:
    """Generate with each model, score, vote and summarize; returns the results document."""
    from .generation import GenerationSettings, build_prompt

    settings = GenerationSettings(max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, samples=a.samples,
                                  temperature=a.temperature, top_p=a.top_p, seed=a.seed,
                                  exact_length=a.exact_length_batches, prepend_bos=a.prepend_bos)
    golds = [gold_answer(p["answer"]) for p in problems]
    questions = [p["question"] for p in problems]
    device = _device(a.device)
    members = []
    for spec in specs:
        started = time.perf_counter()
        texts = generate_for(spec, questions, settings, device, a.progress)
        scores = [score_question(g, [extract_answer(t, "strict") for t in ts], [extract_answer(t, "flexible") for t in ts])
                  for g, ts in zip(golds, texts)]
        members.append({"spec": spec, "texts": texts, "scores": scores, "seconds": round(time.perf_counter() - started, 1)})
    ensemble = [combine_members(g, [m["scores"][i] for m in members]) for i, g in enumerate(golds)] if a.ensemble else None

    summary = {"models": [{"model": m["spec"].arg, "model_dir": str(m["spec"].model_dir), "seconds": m["seconds"],
                           **summarize(m["scores"], a.samples)} for m in members],
               "ensemble": None if ensemble is None else {"method": a.ensemble, "members": len(members),
                                                          **summarize(ensemble, a.samples)},
               "gold_missing": sum(g is None for g in golds)}
    records = []
    for i, (problem, gold) in enumerate(zip(problems, golds)):
        record = {"index": i, "question": problem["question"], "answer": problem["answer"], "gold": gold,
                  "prompt": build_prompt(specs[0].prompt_template, problem["question"]),
                  "members": [{"model": m["spec"].arg, "generations": m["texts"][i], **m["scores"][i]} for m in members]}
        if ensemble is not None:
            record["ensemble"] = ensemble[i]
        records.append(record)
    settings_doc = {
        "models": [s.arg for s in specs], "model_dirs": [str(s.model_dir) for s in specs],
        "prompt_templates": [s.prompt_template for s in specs], "template_sources": [s.template_source for s in specs],
        "dataset": None if a.data_dir else a.dataset, "dataset_config": a.dataset_config, "data_dir": a.data_dir,
        "split": a.split, "limit": a.limit, "num_problems": len(problems), "decoding": decoding_name(a.samples, a.temperature, a.top_p),
        **{k: v for k, v in asdict(settings).items()}, "ensemble": a.ensemble,
        "device": str(device),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return {"settings": settings_doc, "summary": summary, "problems": records}


def parse(argv: list[str]) -> EvalArguments:
    from transformers import HfArgumentParser

    class _Parser(HfArgumentParser):
        def error(self, message):
            self.exit(2, f"error: {message} (see mamba-eval --help)\n")

    parser = _Parser(EvalArguments, allow_abbrev=False, description="Evaluate checkpoints on GSM8K-style math.")
    args, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:
        flags = " ".join(a for a in unknown if a.startswith("-")) or " ".join(unknown)
        raise UserError(f"unknown argument(s): {flags} (see mamba-eval --help for the valid flags)")
    return args


def run(argv: list[str]) -> int:
    from .data import load_eval_problems, local_data_path

    a = parse(argv)
    check_arguments(a)
    specs = [resolve_model(m) for m in a.model]
    for spec in specs:
        if spec.template_source == "default":
            print(f"warning: no prompt_template recorded for {spec.arg} (no run_config.json next to it); "
                  f"prompting with the default {spec.prompt_template!r}", file=sys.stderr)
    data_dir = a.data_dir
    if data_dir is None and a.dataset and local_data_path(a.dataset) is not None:
        data_dir = a.dataset  # a path given as --dataset (a missing one is an error, not a Hub lookup)
    a.data_dir = data_dir
    problems = load_eval_problems(None if data_dir else a.dataset, a.split, data_dir, a.limit, a.dataset_config)
    if not problems:
        raise UserError(f"no problems in split {a.split!r} of {data_dir or a.dataset}; check --split and --limit")
    label = dataset_label(a.dataset, data_dir)
    path = output_path(specs[0], label, a.split, a.output)

    results = evaluate_models(a, specs, problems)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, results, indent=1, sort_keys=False, ensure_ascii=False)
    rows = [(m["model"], m) for m in results["summary"]["models"]]
    if results["summary"]["ensemble"]:
        rows.append((f"ensemble ({a.ensemble}, {len(specs)} models)", results["summary"]["ensemble"]))
    print(format_table(rows, decoding_name(a.samples, a.temperature, a.top_p)))
    if results["summary"]["gold_missing"]:
        print(f"warning: {results['summary']['gold_missing']} problem(s) have no numeric gold answer; "
              "they count as wrong", file=sys.stderr)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(run, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
