"""Command-line arguments of ``mamba-train``: dataclass defaults < training preset < flags.

``HfArgumentParser`` parses the dataclasses below, ``configs.settings.MuonArguments`` (one field per Muon knob,
named as ``create_muon_optimizer``'s keyword) and ``TrainingArguments``, so every ``TrainingArguments`` flag works
too. A preset becomes the parser's *defaults* (``parser.set_defaults``, the pattern of TRL's
``TrlParser.set_defaults_with_config``): anything typed on the command line wins, ``--help`` shows the preset's
values because they are the defaults, and ``TrainingArguments.__post_init__`` runs once, on the final values.

Every training-preset key is a flag, and ``configs.settings.TRAINING_KEYS`` is its one schema: while ``_Parser``
adds the flag of a preset key, it takes the check of typed values, the choices and the help from the key's rule,
so ``--momentum 1.5`` fails like ``momentum: 1.5`` in a presets file.

Changed ``TrainingArguments`` defaults (see ``FRAMEWORK_DEFAULTS``): evaluation and saving every N steps
(N from the preset), no reporting integrations, token counting on (non-padding tokens), the three newest checkpoints kept.
"""

from __future__ import annotations

import argparse
import copy
import sys
import threading
from dataclasses import dataclass, field, fields

from transformers import HfArgumentParser, TrainingArguments

from configs.model_configs import get_training_config, load_presets_file
from configs.settings import LEGACY_KEYS, TRAINING_KEYS, MuonArguments, flag_of  # noqa: F401  (re-exported)
from configs.text import first_line
from configs.training_presets import BASE

from .errors import UserError
from .finalize import DEFAULT_MODEL_SIZE

def preset_field(key: str):
    """A dataclass field for preset key ``key`` (annotate it with the rule's type; a test checks every flag). The
    default is BASE's (None for nullable keys); choices and checks come from the rule when the parser adds it."""
    rule = TRAINING_KEYS[key]
    return field(default=None if rule.nullable else BASE[key], metadata={"help": rule.help})


@dataclass
class ModelArguments:
    model_size: str | None = field(
        default=None,
        metadata={"help": "Named size from configs.model_configs.MODEL_CONFIGS (default: hybrid-tiny)."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Start from an existing Mamba-family checkpoint (local folder or hub id)."},
    )
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "'bundled', a hub id or a local folder (default: the model size's tokenizer)."},
    )


@dataclass
class DataArguments:
    dataset: str | None = field(
        default=None, metadata={"help": "datasets.load_dataset name, or 'bundled-math' (the offline default)."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Config name passed to load_dataset."})
    dataset_split: str = field(default="train", metadata={"help": "Split to train on."})
    data_dir: str | None = field(
        default=None, metadata={"help": "A save_to_disk folder or JSON/JSONL files (instead of --dataset)."}
    )
    text_column: str | None = field(
        default=None,
        metadata={"help": "'prompt_col,response_col' or one text column; GSM8K/MathInstruct are auto-detected."},
    )
    max_seq_length: int = preset_field("max_seq_length")
    packing: str = field(
        default="bfd",
        metadata={"help": "How examples become training rows: bfd (whole examples packed best-fit; position_ids keep "
                  "them apart in the model: the default), bfd_leaky (the same rows, no boundaries), stream "
                  "(concatenate and cut: examples split across rows; the default before bfd), none (one padded "
                  "example per row); true = stream, false = none. A continued run keeps the mode it started with."},
    )
    eval_packing: str = field(
        default="bfd",
        metadata={"help": "How the held-out rows are built: bfd (whole examples, each alone in the model: the loss "
                  "generation sees; the default), none (one padded example per row: the same losses), same (as "
                  "--packing: leaky under stream and bfd_leaky; how runs evaluated before this setting). A continued "
                  "run keeps the one it started with."},
    )
    train_on_prompt: bool = field(
        default=False, metadata={"help": "Also put loss on the prompt (default: response only)."}
    )
    eval_fraction: float = field(default=0.02, metadata={"help": "Held-out share when the data has no eval split."})
    max_eval_examples: int = field(default=500, metadata={"help": "Cap on held-out examples."})
    max_train_examples: int | None = field(default=None, metadata={"help": "Use only the first N examples."})


SCHEDULE_CLOCKS = ("steps", "time")  # what the LR schedule follows (--schedule_by)


@dataclass
class RunArguments:
    training_preset: str = field(
        default="muon_default", metadata={"help": "Named preset from configs.model_configs.TRAINING_CONFIGS."}
    )
    presets_file: str | None = field(
        default=None, metadata={"help": "YAML/JSON file with extra presets or model sizes."}
    )
    optimizer: str = preset_field("optimizer")
    resume: str | None = field(
        default=None,
        metadata={
            "help": "'latest', a checkpoint-N or run folder (continue exactly), or another run's model folder "
            "such as .../final (fine-tune from its weights with a fresh optimizer)."
        },
    )
    vram_auto: bool = field(
        default=False, metadata={"help": "Size batch/accumulation to the free GPU memory, keeping the effective batch."}
    )
    gsm8k_eval_samples: int = field(
        default=0, metadata={"help": "At each eval, also measure answer accuracy on N held-out problems (0 = off)."}
    )
    time_budget: str | None = field(
        default=None,
        metadata={"help": "Wall-clock budget such as 90s, 5m or 1.5h: when spent, evaluate, save and stop."},
    )
    schedule_by: str = field(
        default="steps",
        metadata={"help": "With --time_budget: 'time' stretches the LR schedule of --max_steps over the budget (it "
                  "ends annealed when the budget is spent, as fixed-time comparisons need); 'steps' follows steps "
                  "only.", "choices": SCHEDULE_CLOCKS},
    )
    divergence_factor: float | None = field(
        default=None,
        metadata={"help": "Stop as diverged when the loss exceeds this multiple of its best value so far "
                  "(non-finite losses always stop the run)."},
    )
    gsm8k_eval_dataset: str = field(
        default="bundled-math", metadata={"help": "Problems for --gsm8k_eval_samples (e.g. openai/gsm8k)."}
    )


ARG_CLASSES = (ModelArguments, DataArguments, RunArguments, MuonArguments, TrainingArguments)

#: Preset keys whose flag has another name (users write the nanoGPT-style names in presets); from the schema.
PRESET_RENAMES = {key: flag_of(key) for key in TRAINING_KEYS if flag_of(key) != key}
_KEY_OF_FLAG = {flag_of(key): key for key in TRAINING_KEYS}
#: Field metadata that is ours (configs.settings), not argparse's: kept from add_argument
_SCHEMA_METADATA = ("rule", "label", "sweep", "factory")

#: TrainingArguments defaults we change; a preset or a flag overrides them.
FRAMEWORK_DEFAULTS = {
    "eval_strategy": "steps",
    "save_strategy": "steps",
    "logging_strategy": "steps",
    "report_to": "none",
    "save_total_limit": 3,
    "dataloader_num_workers": 0,
    # A NaN/inf loss must reach the log (and the divergence check), not be averaged away.
    "logging_nan_inf_filter": False,
    # Our datasets carry only model inputs; the collator must see `labels`.
    "remove_unused_columns": False,
}


_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``5m`` or ``1.5h``.

    >>> parse_duration("5m"), parse_duration("1.5h"), parse_duration("90")
    (300.0, 5400.0, 90.0)
    """
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:], None)
    number = value[:-1] if unit else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise UserError(f"--time_budget {text!r}: expected a number with s, m or h, such as 90s, 5m or 1.5h") from None
    if seconds <= 0:
        raise UserError(f"--time_budget {text!r}: must be positive")
    return seconds


@dataclass
class ParsedArgs:
    model: ModelArguments
    data: DataArguments
    run: RunArguments
    muon: MuonArguments
    training: TrainingArguments
    preset: dict
    explicit: set[str]  # flags the user typed (dest names)
    argv: list[str]

    @property
    def optimizer_type(self) -> str:
        """The optimizer the flags and preset ask for (a continued run keeps its own: ``resolve.resolve_run``)."""
        return self.run.optimizer or self.preset.get("optimizer", "muon")

    @property
    def model_size(self) -> str:
        """The size the flags name: --model_size, "custom" for --model_name_or_path, else the default size."""
        return self.model.model_size or ("custom" if self.model.model_name_or_path else DEFAULT_MODEL_SIZE)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _checked(convert, rule):
    """argparse ``type`` for the flag of a preset key: convert as before, then apply the key's rule; a bad value
    fails with the rule's message, as it does in a presets file."""

    def check(text):
        try:
            value = convert(text)
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            value = text  # e.g. "1e3" for an int: the rule reads it as a presets file would
        try:
            checked = rule(value)
        except (TypeError, ValueError):
            # the presets-file message: a number as typed (`got 0`, not HF's float `0.0`), a word quoted
            raise argparse.ArgumentTypeError(rule.error(value, text if _is_number(text) else None)) from None
        return checked if value is text else value

    return check


class _Parser(HfArgumentParser):
    def error(self, message):
        # One line naming the problem (argparse lists the valid choices in it), not a usage block.
        self.exit(2, f"error: {message} (see mamba-train --help)\n")

    @staticmethod
    def _parse_dataclass_field(parser, fld):
        """HfArgumentParser's flag for ``fld``; a preset key's flag also gets its rule's check, choices and help
        (ours, e.g. SCHEDULERS instead of every SchedulerType)."""
        key = _KEY_OF_FLAG.get(fld.name)
        if key is None:
            return HfArgumentParser._parse_dataclass_field(parser, fld)
        shown = copy.copy(fld)
        shown.metadata = {k: v for k, v in fld.metadata.items() if k not in _SCHEMA_METADATA}
        HfArgumentParser._parse_dataclass_field(parser, shown)
        rule, action = TRAINING_KEYS[key], parser._option_string_actions[f"--{fld.name}"]
        action.type = _checked(action.type, rule)
        if rule.choices and rule.type is not bool:  # HfArgumentParser makes bool flags itself
            action.choices = rule.choices
        if rule.help:
            action.help = rule.help
        return None


def preset_defaults(preset: dict) -> dict:
    """The parser defaults a preset gives: dest -> value (FRAMEWORK_DEFAULTS first, the preset's keys as flags)."""
    return {**FRAMEWORK_DEFAULTS, **{flag_of(key): value for key, value in preset.items()}}


#: HfArgumentParser builds its flags by writing each field's resolved type onto the dataclasses' shared ``Field``
#: objects (and, for ``X | None``, the inner type over it), so two threads building a parser at once can see a
#: half-written type (``'str' has no attribute '__args__'``): one parser is built at a time.
_BUILD_LOCK = threading.Lock()


def make_parser(preset_name: str | None = None, preset: dict | None = None) -> HfArgumentParser:
    """The parser; with a preset, its values (and FRAMEWORK_DEFAULTS) are the defaults, which --help shows."""
    # allow_abbrev=False: a mistyped or shortened flag is an error, never a silent match.
    with _BUILD_LOCK:
        parser = _Parser(ARG_CLASSES, allow_abbrev=False, description="Train a Mamba/hybrid model with Muon.")
    if preset is not None:
        defaults = preset_defaults(preset)
        for action in parser._actions:  # as TRL's TrlParser.set_defaults_with_config
            if action.dest in defaults:
                value = defaults[action.dest]  # typed as the flag would be (argparse types a str default itself)
                typed = action.type is not None and value is not None and not isinstance(value, str)
                action.default = action.type(value) if typed else value
        parser.description += (f" Defaults shown are those of --training_preset {preset_name} (pass "
                               "--training_preset NAME --help to see another preset's).")
    return parser


def explicit_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dest names the user actually typed (parse again with every default suppressed)."""
    saved = [(a, a.default) for a in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        namespace, _ = parser.parse_known_args(argv)
    finally:
        for action, default in saved:
            action.default = default
    return set(vars(namespace))


def _early(argv: list[str], name: str, default):
    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    early.add_argument(f"--{name}", default=default)
    namespace, _ = early.parse_known_args(argv)
    return getattr(namespace, name)


def parse_args(argv: list[str] | None = None) -> ParsedArgs:
    argv = list(sys.argv[1:] if argv is None else argv)
    presets_file = _early(argv, "presets_file", None)
    if presets_file:
        load_presets_file(presets_file)
    preset_name = _early(argv, "training_preset", RunArguments.training_preset)
    preset = get_training_config(preset_name)
    parser = make_parser(preset_name, preset)
    namespace, unknown = parser.parse_known_args(argv)
    if unknown:
        flags = " ".join(a for a in unknown if a.startswith("-")) or " ".join(unknown)
        raise UserError(f"unknown argument(s): {flags} (see mamba-train --help for the valid flags)")
    try:
        outputs = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as exc:  # TrainingArguments.__post_init__ validation
        raise UserError(first_line(exc)) from None
    model, data, run, muon, training = outputs
    from .data import eval_packing_mode, packing_mode  # noqa: PLC0415  (data imports datasets: only once parsed)

    data.packing = packing_mode(data.packing)
    eval_packing_mode(data.eval_packing, data.packing)  # a bad value: one line now, not after the model is built
    explicit = explicit_dests(parser, argv)
    if "include_num_input_tokens_seen" not in explicit:
        # Counts real tokens for tokens/s (argparse reads this str|bool field as a bool, so it is set here).
        training.include_num_input_tokens_seen = "non_padding"
    return ParsedArgs(model, data, run, muon, training, preset, explicit, argv)
