"""What the flags leave open, filled in the same way by ``mamba-train`` and by the reuse check (``run_settings``):
the model size of a run that names none, and the TrainingArguments' run folder and name, progress display, bf16
and pinned memory."""

from __future__ import annotations

import sys
from pathlib import Path

#: The model size of a run that names none (and starts from no checkpoint).
DEFAULT_MODEL_SIZE = "hybrid-tiny"


def finalize_training_args(parsed, output_dir: Path) -> None:
    """Fill in what the flags left open: the run folder and name, progress display, bf16 and pinned memory."""
    import torch

    t = parsed.training
    t.output_dir = str(output_dir)
    if "run_name" not in parsed.explicit:
        t.run_name = output_dir.name
    if "disable_tqdm" not in parsed.explicit:
        t.disable_tqdm = not sys.stderr.isatty()  # a log file gets one progress line per log step instead
    if torch.cuda.is_available() and not ({"bf16", "fp16"} & parsed.explicit) and torch.cuda.is_bf16_supported():
        t.bf16 = True
    if not torch.cuda.is_available() and "dataloader_pin_memory" not in parsed.explicit:
        t.dataloader_pin_memory = False
