"""Answer accuracy during training: at every evaluation, greedy-solve N held-out math problems.

    mamba-train --training_preset muon_demo --gsm8k_eval_samples 50                       # bundled-math test
    mamba-train ... --gsm8k_eval_samples 100 --gsm8k_eval_dataset openai/gsm8k            # GSM8K test (Hub)

Logs ``eval_gsm8k_strict`` and ``eval_gsm8k_flexible`` (fractions; extraction as in ``mamba-eval``) through
``Trainer.log``, so they land in ``metrics.jsonl`` as their own line at the evaluation's step, and adds them
to the evaluation's metrics, so ``--metric_for_best_model gsm8k_strict`` can select checkpoints by them.
The Trainer logs its eval loss *before* calling ``on_evaluate``, hence the separate line.

The problems (the first N of the dataset's ``test`` split) are loaded once, when the callback is made, so a
missing dataset fails before training starts. Every process generates (FSDP needs all ranks in the
forward pass); only the main process writes the log. Cost: N prompts x up to ``max_new_tokens`` decode steps.
"""

from __future__ import annotations

import time

from transformers import TrainerCallback

from .answers import extract_answer, gold_answer, is_correct
from .data import PROMPT_TEMPLATE, load_eval_problems
from .generation import GenerationSettings, build_prompt, generate_answers

__all__ = ["GSM8KEvalCallback", "greedy_accuracy"]


def greedy_accuracy(model, tokenizer, problems, prompt_template: str = PROMPT_TEMPLATE,
                    max_new_tokens: int = 256, batch_size: int = 16) -> dict:
    """``{"gsm8k_strict", "gsm8k_flexible"}``: share of ``problems`` the model solves greedily."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size)
    prompts = [build_prompt(prompt_template, p["question"]) for p in problems]
    texts = [t[0] for t in generate_answers(model, tokenizer, prompts, settings)]
    golds = [gold_answer(p["answer"]) for p in problems]
    return {f"gsm8k_{mode}": sum(is_correct(extract_answer(t, mode), g) for t, g in zip(texts, golds)) / len(problems)
            for mode in ("strict", "flexible")}


class GSM8KEvalCallback(TrainerCallback):
    """Adds greedy answer accuracy on ``num_problems`` problems to every evaluation; call :meth:`attach` with the
    trainer before training (the metrics go through ``trainer.log``)."""

    def __init__(self, num_problems: int, dataset: str = "bundled-math", split: str = "test",
                 max_new_tokens: int = 256, batch_size: int = 16, prompt_template: str = PROMPT_TEMPLATE):
        if num_problems < 1:
            raise ValueError(f"num_problems must be at least 1, got {num_problems}")
        self.problems = load_eval_problems(dataset, split, limit=num_problems)
        self.dataset, self.split = dataset, split
        self.max_new_tokens, self.batch_size, self.prompt_template = max_new_tokens, batch_size, prompt_template
        self.trainer = None

    def attach(self, trainer) -> GSM8KEvalCallback:
        self.trainer = trainer
        return self

    def on_evaluate(self, args, state, control, model=None, processing_class=None, metrics=None, **kwargs):
        if model is None or processing_class is None:
            return
        was_training = model.training
        model.eval()
        started = time.perf_counter()
        try:
            scores = greedy_accuracy(model, processing_class, self.problems, self.prompt_template,
                                     self.max_new_tokens, self.batch_size)
        finally:
            model.train(was_training)
        logs = {f"eval_{k}": v for k, v in scores.items()}
        if metrics is not None:
            metrics.update(logs)
        if self.trainer is not None:
            self.trainer.log(dict(logs))
        if state.is_world_process_zero:
            print(f"gsm8k @ step {state.global_step} | strict {scores['gsm8k_strict']:.3f} | flexible "
                  f"{scores['gsm8k_flexible']:.3f} ({len(self.problems)} {self.dataset} {self.split} problems, "
                  f"{time.perf_counter() - started:.0f}s)", flush=True)
