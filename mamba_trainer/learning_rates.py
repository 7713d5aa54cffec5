"""The lrs a run trains with: a preset's or the flags', carried from ``--lr_width`` to the model's width by the rule in
``configs/lr_rule.py``. Used by ``mamba-train`` and by the reuse check (``run_settings``), so both resolve the same."""

from __future__ import annotations


def apply_lr_rule(parsed, optimizer_type: str, width: int | None, architecture: str | None) -> dict | None:
    """Carry the lrs from ``--lr_width`` (a preset's or a flag) to the model's ``width`` by ``configs.lr_rule``,
    in ``parsed`` (the TrainingArguments' learning_rate and the Muon flags' adamw_lr); returns what it did, or None
    when nothing is carried. Lrs typed on the command line stay as typed unless --lr_width was typed too."""
    from configs.lr_rule import resolve

    mu, t = parsed.muon, parsed.training
    keep = frozenset() if "lr_width" in parsed.explicit else frozenset({"learning_rate", "adamw_lr"} & parsed.explicit)
    lrs = resolve(optimizer=optimizer_type, learning_rate=t.learning_rate, adamw_lr=mu.adamw_lr,
                  lr_width=mu.lr_width, width=width, architecture=architecture, keep=keep)
    if lrs:
        t.learning_rate = lrs["learning_rate"]
        if lrs["adamw_lr"] is not None:
            mu.adamw_lr = lrs["adamw_lr"]
    return lrs


def describe_lrs(lrs: dict) -> str:
    """The line a run prints when its lrs were carried: what it trains with, and from where."""
    names = {"learning_rate": "lr", "adamw_lr": "AdamW side"}
    parts = [f"{names[k]} {lrs[k]:g} ({lrs['reasons'][k]})" for k in ("learning_rate", "adamw_lr") if lrs[k] is not None]
    state = "measured" if lrs["measured"] else "the hypothesis bench/lr_transfer.py tests"
    return f"learning rates for width {lrs['width']}: {', '.join(parts)}; rule: configs/lr_rule.py ({state})"
