"""``run_config.json``, typed and versioned: the one module that writes it and reads it back.

    write_run_config(run_dir, config)         # stamps SCHEMA_VERSION; whole or not at all
    cfg = RunConfig.read(run_dir)             # raises on a missing or corrupt file (OSError, ValueError)
    cfg = RunConfig.load(run_dir)             # None for a missing, torn or non-object file
    cfg.model_size, cfg.optimizer_type, cfg.training_arguments, cfg.muon, cfg.data, cfg.prompt_template, ...

Versions: ``schema_version`` 2 is the first that names itself; a file without the field (every run folder written
before it, e.g. ``bench/results/*``) is version 1, which holds the same sections, so it reads unchanged. Version 3
records ``data.eval_packing`` (how the held-out rows were built); a version 1-2 file's data section reads with
``eval_packing: "same"``, which is how those runs evaluated. A later version needs an upgrade step in
``_UPGRADES`` (from the version before it); a file newer than this code knows is read as it is (sections are only
ever added), and ``RunConfig.newer`` says so.
Sections (all optional to a reader: older or hand-made files lack some): ``model`` {model_size, model_name_or_path,
tokenizer, num_parameters, architecture}, ``optimizer_type``, ``training_preset``, ``preset``, ``argv``, ``flags``,
``muon``, ``data``, ``prompt_template``, ``parent_run``, ``parent_model``, ``training_arguments``,
``learning_rates``, ``resumes``, ``restarts``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..jsonio import read_json, write_json
from .layout import RUN_CONFIG

__all__ = ["RUN_CONFIG", "SCHEMA_VERSION", "VERSION_KEY", "RunConfig", "read_run_config", "write_run_config"]

VERSION_KEY = "schema_version"
SCHEMA_VERSION = 3


def _eval_packing_recorded(raw: dict) -> dict:
    """2 -> 3: a run from before ``--eval_packing`` built its held-out rows as its training rows ("same")."""
    data = raw.get("data")
    if isinstance(data, dict) and "eval_packing" not in data:
        return {**raw, "data": {**data, "eval_packing": "same"}}
    return raw


#: version -> the step that turns a file of that version into one of the next (1 -> 2: the field itself only)
_UPGRADES = {1: lambda raw: raw, 2: _eval_packing_recorded}
#: the sections mamba-train needs to continue a run (``resume``) ...
RESUME_SECTIONS = ("model", "optimizer_type")
#: ... and to tell whether a finished folder holds the same run as a command (``run_settings``)
SETTINGS_SECTIONS = ("model", "optimizer_type", "training_preset", "data", "training_arguments")


def _section(raw: dict, key: str) -> dict:
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class RunConfig:
    """A run's ``run_config.json``, upgraded to ``SCHEMA_VERSION``. ``raw`` is the file's object as read (for the
    sections not typed here); ``version`` the version it was written as."""

    raw: dict = field(default_factory=dict)
    version: int = SCHEMA_VERSION

    # ---- reading and writing ----
    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        if not isinstance(data, dict):
            raise ValueError(f"{RUN_CONFIG} holds {type(data).__name__}, not an object")
        version = data.get(VERSION_KEY, 1)
        version = version if isinstance(version, int) and not isinstance(version, bool) else 1
        raw = dict(data)
        for v in range(version, SCHEMA_VERSION):
            raw = _UPGRADES[v](raw)
        raw.pop(VERSION_KEY, None)
        return cls(raw, version)

    @classmethod
    def read(cls, run_dir: Path) -> "RunConfig":
        """The run config in ``run_dir``; a missing or corrupt file raises (OSError, ValueError)."""
        return cls.from_dict(read_json(Path(run_dir) / RUN_CONFIG))

    @classmethod
    def load(cls, run_dir: Path | None) -> "RunConfig | None":
        """The run config in ``run_dir``, or None when there is none (or it is torn, or not a JSON object)."""
        if run_dir is None:
            return None
        data = read_json(Path(run_dir) / RUN_CONFIG, default=None)
        return cls.from_dict(data) if isinstance(data, dict) else None

    def to_json(self) -> dict:
        return {**self.raw, VERSION_KEY: max(self.version, SCHEMA_VERSION)}

    def write(self, run_dir: Path) -> None:
        write_json(Path(run_dir) / RUN_CONFIG, self.to_json())

    @property
    def newer(self) -> bool:
        """Written by a later version of this code (read as it is)."""
        return self.version > SCHEMA_VERSION

    def has(self, *sections: str) -> bool:
        return all(key in self.raw for key in sections)

    @property
    def is_resumable(self) -> bool:
        """Holds what continuing the run needs (written by mamba-train)."""
        return isinstance(self.raw.get("model"), dict) and "optimizer_type" in self.raw

    def get(self, key: str, default=None):
        return self.raw.get(key, default)

    # ---- sections ----
    model = property(lambda self: _section(self.raw, "model"))
    muon = property(lambda self: _section(self.raw, "muon"))
    data = property(lambda self: _section(self.raw, "data"))
    training_arguments = property(lambda self: _section(self.raw, "training_arguments"))
    model_size = property(lambda self: self.model.get("model_size"))
    num_parameters = property(lambda self: self.model.get("num_parameters"))
    tokenizer = property(lambda self: self.model.get("tokenizer"))
    architecture = property(lambda self: self.model.get("architecture"))
    optimizer_type = property(lambda self: self.raw.get("optimizer_type"))
    training_preset = property(lambda self: self.raw.get("training_preset"))
    prompt_template = property(lambda self: self.raw.get("prompt_template"))
    argv = property(lambda self: list(self.raw.get("argv") or []))
    adamw_lr = property(lambda self: self.muon.get("adamw_lr"))


def read_run_config(run_dir: Path) -> dict:
    """``run_config.json``'s object at ``SCHEMA_VERSION`` (without the version field), for code that edits it and
    writes it back with ``write_run_config``; raises as ``RunConfig.read``."""
    return dict(RunConfig.read(run_dir).raw)


def write_run_config(run_dir: Path, config: "dict | RunConfig") -> None:
    """Write ``run_dir/run_config.json`` at ``SCHEMA_VERSION`` (an older object is upgraded first)."""
    cfg = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
    cfg.write(run_dir)
