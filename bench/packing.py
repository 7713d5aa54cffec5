"""Packing modes through mamba-train: what keeping math problems apart is worth, and what it costs.

    python bench/packing.py                                    # hybrid-tiny + mamba-tiny, 400 steps, 3 seeds
    python bench/packing.py --steps 40 --seeds 1 --sizes hybrid-tiny --out /tmp/packing   # a quick look
    python bench/packing.py --report                           # tables from the finished runs in --out

Modes (``--packing``): stream (concatenate and cut: the old default), bfd_leaky (whole examples best-fit, state and
attention flowing between them), bfd (the default: the same rows with position_ids, each example alone in the
model), none (one padded example per row). Every run is one ``mamba-train`` process launched by
``bench/convergence.py``'s ``train_run`` (Muon, the ``muon_demo`` preset scaled to the run, its lr, the same seeds
and held-out examples for every mode), resumable. After a run, its final model is scored the way generation sees it:
* leak-free eval loss: mean token loss over the held-out examples, each run alone (padded, no packing), whatever
  the mode the run trained and evaluated with;
* answer accuracy: ``mamba-eval`` on held-out bundled problems (``--eval_problems``, the test split);
* content tokens/s: the run's median logged tokens/s (mamba-train counts non-padding tokens and leaves evaluation
  time out); the runs share the machine with whatever else ran, so this column is a rough guide: the side-by-side
  speed comparison is ``bench/throughput.py --compare packing``; padding fraction: padding tokens / tokens in the
  training rows.
Results: ``<out>/results.json`` and ``summary.md``; run folders keep metrics and run files (weights pruned after
scoring), as ``bench/results/convergence_400`` does.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import convergence  # noqa: E402  (bench/convergence.py)
from mamba_trainer.packing import padding_fraction  # noqa: E402
from mamba_trainer.rundir import RunConfig, series  # noqa: E402

MODES = ("stream", "bfd_leaky", "bfd", "none")
SCORES = "scores.json"


def leak_free_eval_loss(final_dir: Path, seed: int, eval_examples: int, seq_len: int) -> float:
    """Mean token loss of the model in ``final_dir`` over the run's held-out examples, each alone (padded rows)."""
    import torch

    from mamba_trainer.data import build_datasets
    from mamba_trainer.models import load_pretrained
    from mamba_trainer.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(str(final_dir))
    _, held_out, _ = build_datasets(tokenizer, packing="none", eval_packing="none", max_seq_length=seq_len,
                                    seed=seed, max_eval_examples=eval_examples, max_train_examples=1)  # the same split
    model = load_pretrained(str(final_dir)).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(held_out), 16):
            batch = held_out[start:start + 16]
            ids, labels = torch.tensor(batch["input_ids"]), torch.tensor(batch["labels"])
            logits = model(input_ids=ids, attention_mask=torch.tensor(batch["attention_mask"])).logits
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                                     labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")
            total += float(loss)
            count += int((labels[:, 1:] != -100).sum())
    return total / count


def answer_accuracy(final_dir: Path, problems: int) -> float:
    """Strict answer accuracy of ``mamba-eval`` (greedy) on the first ``problems`` bundled test problems."""
    out = final_dir.parent / "answers.json"
    subprocess.run([sys.executable, "-m", "mamba_trainer.evaluate", "--model", str(final_dir), "--dataset",
                    "bundled-math", "--split", "test", "--limit", str(problems), "--output", str(out)],
                   cwd=ROOT, check=True, capture_output=True, text=True)
    models = json.loads(out.read_text())["summary"]["models"]
    return float(models[0]["strict"])


def score(run_dir: Path, cfg, seed: int) -> dict:
    """The scores of one finished run (kept in ``<run>/scores.json``, so a rerun does not score it again)."""
    path = run_dir / SCORES
    if path.is_file():
        return json.loads(path.read_text())
    _, rates = series(run_dir, "tokens_per_second")
    padding = padding_fraction({"max_seq_length": cfg.seq_len, **RunConfig.read(run_dir).data})
    scores = {"leak_free_eval_loss": leak_free_eval_loss(run_dir / "final", seed, cfg.eval_examples, cfg.seq_len),
              "accuracy": answer_accuracy(run_dir / "final", cfg.eval_problems) if cfg.eval_problems else None,
              "tokens_per_second": statistics.median(rates[1:] or rates) if rates else None,
              "padding_fraction": padding}
    scores["content_tokens_per_second"] = scores["tokens_per_second"]  # logged as non-padding tokens
    path.write_text(json.dumps(scores, indent=1) + "\n")
    convergence.prune(run_dir)
    (run_dir / SCORES).write_text(json.dumps(scores, indent=1) + "\n")  # prune keeps only its own list
    return scores


def planned(cfg):
    """(seed, size, mode) of every run, seed-major: one seed of every size and mode first, a table to read early."""
    for seed in range(cfg.seeds):
        for size in cfg.sizes.split(","):
            for mode in cfg.modes.split(","):
                yield seed, size, mode


def run_all(cfg) -> list[dict]:
    for seed, size, mode in planned(cfg):
        # eval "same": the eval loss as trained is the mode's own (leaky under stream and bfd_leaky); the
        # leak-free loss is scored after the run, the same way for every mode
        run_cfg = SimpleNamespace(**{**vars(cfg), "variant": mode, "packing": mode, "eval_packing": "same",
                                     "keep_weights": True, "resumable": True, "out": cfg.out})
        r = convergence.train_run(size, "muon", cfg.lr, seed, run_cfg, cfg.adamw_lr)
        score(Path(r["run_dir"]), cfg, seed)
        write(cfg, finished_rows(cfg))
    return finished_rows(cfg)


def summarize(rows: list[dict]) -> str:
    lines = ["| model | packing | leak-free eval loss | answer accuracy | content tokens/s | padding | "
             "eval loss as trained |", "|---|---|---|---|---|---|---|"]

    def ms(values, digits):
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return "-"
        if len(values) == 1:  # one seed: no spread to show
            return f"{values[0]:.{digits}f}"
        return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    for size in dict.fromkeys(r["size"] for r in rows):
        for mode in MODES:
            mine = [r for r in rows if r["size"] == size and r["mode"] == mode]
            if mine:
                lines.append(f"| {size} | {mode} | {ms([r['leak_free_eval_loss'] for r in mine], 4)} | "
                             f"{ms([r['accuracy'] for r in mine], 3)} | "
                             f"{ms([r['tokens_per_second'] for r in mine], 0)} | "
                             f"{ms([r['padding_fraction'] for r in mine], 4)} | "
                             f"{ms([r['final_eval_loss'] for r in mine], 4)} ({len(mine)} seed{'s' if len(mine) > 1 else ''}) |")
    return "\n".join(lines)


def finished_rows(cfg) -> list[dict]:
    """Every finished, scored run under ``cfg.out`` for the sizes, modes and seeds asked, in run order: the table
    reads the run folders, so runs made by several instances (one per size, say) or across sessions all count."""
    rows = []
    for seed, size, mode in planned(cfg):
        run_dir = Path(cfg.out) / size / convergence.run_name("muon", cfg.lr, seed, mode)
        if convergence.is_complete(run_dir) and (run_dir / SCORES).is_file():
            rows.append({"size": size, "mode": mode, "seed": seed,
                         "final_eval_loss": convergence.summarize_run(convergence.read_metrics(run_dir))["final"],
                         **json.loads((run_dir / SCORES).read_text())})
    return rows


def write(cfg, rows) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"args": vars(cfg), "rows": rows}, indent=1, default=str) + "\n")
    (out / "summary.md").write_text(summarize(rows) + "\n")


def parse(argv=None):
    p = argparse.ArgumentParser(description="Packing modes through mamba-train (CPU-sized).")
    p.add_argument("--sizes", default="hybrid-tiny,mamba-tiny")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--eval_every", type=int, default=25)
    p.add_argument("--eval_examples", type=int, default=128)
    p.add_argument("--eval_problems", type=int, default=200, help="bundled test problems for answer accuracy")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-2, help="Muon lr (muon_demo's)")
    p.add_argument("--adamw_lr", type=float, default=2e-3, help="AdamW-side lr (muon_demo's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--modes", default=",".join(MODES), help="packing modes to run, comma-separated")
    p.add_argument("--extra", default="", help="more mamba-train flags for every run (e.g. \"--bf16 true\")")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "packing_400"))
    p.add_argument("--report", action="store_true",
                   help="only rewrite results.json and summary.md from the finished runs")
    return p.parse_args(argv)


def main(argv=None) -> int:
    cfg = parse(argv)
    unknown = set(cfg.modes.split(",")) - set(MODES)
    if unknown:
        print(f"error: --modes: unknown {', '.join(sorted(unknown))}; valid: {', '.join(MODES)}", file=sys.stderr)
        return 2
    rows = finished_rows(cfg) if cfg.report else run_all(cfg)
    write(cfg, rows)
    print(summarize(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
