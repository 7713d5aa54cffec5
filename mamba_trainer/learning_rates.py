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
    fits = lrs.get("fit_widths") or {}  # records written before the key: no widths to name
    widths = "; ".join(f"{', '.join(map(str, w))} ({'Muon' if side == 'muon' else 'AdamW'})"
                       for side, w in sorted(fits.items()))
    state = ("fitted on proxies" + (f" at widths {widths}" if widths else "") if lrs["measured"]
             else "partly the muP-style hypothesis: not measured for this architecture")
    return f"learning rates for width {lrs['width']}: {', '.join(parts)}; rule: configs/lr_rule.py ({state})"


def preset_lrs(model_size: str, training_preset: str, extra: list[str] = ()) -> dict:
    """The lrs a ``mamba-train`` run of ``model_size`` with ``training_preset`` (and ``extra`` flags) trains with:
    {"optimizer", "learning_rate", "adamw_lr" (None under AdamW), "lrs" (the rule's record, None when not carried)}."""
    from configs.model_configs import get_model_config
    from mamba_trainer.args import parse_args
    from mamba_trainer.learning_rates import apply_lr_rule
    from optimizers.factory import ADAMW_LR_RATIO

    parsed = parse_args(["--model_size", model_size, "--training_preset", training_preset, *extra])
    entry = get_model_config(model_size)
    lrs = apply_lr_rule(parsed, parsed.optimizer_type, entry["config"].get("hidden_size"), entry["architecture"])
    lr, adamw = parsed.training.learning_rate, parsed.muon.adamw_lr
    if parsed.optimizer_type == "muon" and adamw is None:
        adamw = lr * ADAMW_LR_RATIO
    return {"optimizer": parsed.optimizer_type, "learning_rate": lr,
            "adamw_lr": adamw if parsed.optimizer_type == "muon" else None, "lrs": lrs}
