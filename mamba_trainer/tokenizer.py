"""Load the tokenizer: ``"bundled"`` (shipped, 1024 tokens), a local folder, or a Hugging Face Hub id.

    load_tokenizer("bundled")                    # mamba_trainer/resources/tokenizer (scripts/build_tokenizer.py)
    load_tokenizer("/path/to/tokenizer_dir")     # any folder AutoTokenizer can read
    load_tokenizer("EleutherAI/gpt-neox-20b")    # the tokenizer of the real model sizes; needs the Hub or its cache

Folder or Hub id is decided by ``mamba_trainer.paths.local_path`` (the rule datasets and models follow too).

Every tokenizer comes back with a pad token (its eos when it has none) and the requested padding side
("right" for training, "left" for batched generation).
"""

from __future__ import annotations

from pathlib import Path

from configs.text import one_line
from mamba_trainer.errors import UserError
from mamba_trainer.paths import local_path

BUNDLED = "bundled"
BUNDLED_TOKENIZER_DIR = Path(__file__).parent / "resources" / "tokenizer"
EOS_TOKEN = "<|endoftext|>"  # also the bos token: one separator between packed documents
PAD_TOKEN = "<|pad|>"


def load_tokenizer(name_or_path: str = BUNDLED, *, padding_side: str = "right"):
    """A ``transformers`` fast tokenizer with ``pad_token`` set; raises ``UserError`` when it cannot be had."""
    from transformers import AutoTokenizer

    if padding_side not in ("left", "right"):
        raise UserError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    name = str(name_or_path)
    path = BUNDLED_TOKENIZER_DIR if name == BUNDLED else local_path(
        name, "tokenizer folder {name} does not exist; pass an existing folder, a Hub id, or --tokenizer bundled")
    if path is not None:
        if not path.is_dir():
            raise UserError(f"--tokenizer {name} is a file; pass the folder that holds tokenizer.json and tokenizer_config.json")
        try:
            tok = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"could not load a tokenizer from folder {path} ({one_line(exc, 200)}); "
                            "pass a folder written by tokenizer.save_pretrained, or --tokenizer bundled") from exc
    else:
        try:
            tok = AutoTokenizer.from_pretrained(name)
        # OSError covers no connection, offline mode, unknown and gated repos; ValueError a malformed id.
        except (OSError, ValueError) as exc:
            raise UserError(f"could not fetch tokenizer {name!r} from the Hugging Face Hub ({one_line(exc, 200)}); "
                            f"download it where the Hub is reachable (hf download {name}) and pass the folder: "
                            "--tokenizer /path/to/dir") from exc
    if tok.eos_token is None:
        raise UserError(f"tokenizer {name!r} has no eos token, which ends every training example; "
                        "pick a tokenizer that has one or set eos_token in its tokenizer_config.json")
    if tok.pad_token is None:
        # Padding is always masked out (labels -100, attention_mask 0), so reusing eos is safe.
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok
