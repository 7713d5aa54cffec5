"""The bundled tokenizer and ``load_tokenizer`` (no network: hub failures are simulated offline)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mamba_trainer.errors import UserError
from mamba_trainer.mathgen import SAMPLE_PATH
from mamba_trainer.tokenizer import BUNDLED_TOKENIZER_DIR, EOS_TOKEN, PAD_TOKEN, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("bundled")


def test_vocab_and_special_tokens(tok):
    assert len(tok) == 1024 and tok.backend_tokenizer.get_vocab_size() == 1024
    assert tok.eos_token == tok.bos_token == EOS_TOKEN and tok.pad_token == PAD_TOKEN
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "right"


def test_loads_with_plain_autotokenizer():
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(BUNDLED_TOKENIZER_DIR))
    assert len(auto) == 1024 and auto.pad_token == PAD_TOKEN


def test_round_trip_on_math_and_other_text(tok):
    texts = [json.loads(line)["question"] + "\n" + json.loads(line)["answer"]
             for line in SAMPLE_PATH.read_text().splitlines()[:50]]
    texts += ["Question: 48/2 = <<48/2=24>>24, $1,250.75 and -3.5%\nAnswer: ", "  tabs\tand ünïcödé ✓ 😀  ",
              "def f(x):\n    return x ** 2  # comment"]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
        assert tok(text)["input_ids"] == ids  # no bos/eos added implicitly: the data pipeline adds eos itself


def test_numbers_split_into_single_digits(tok):
    tokens = tok.convert_ids_to_tokens(tok("it costs 1234567890 dollars", add_special_tokens=False)["input_ids"])
    digits = [t for t in tokens if any(c.isdigit() for c in t)]
    assert digits == list("1234567890")


def test_padding_side_left_for_generation():
    tok = load_tokenizer("bundled", padding_side="left")
    batch = tok(["1+1", "12+34=46"], padding=True)
    assert tok.padding_side == "left" and batch["input_ids"][0][0] == tok.pad_token_id
    with pytest.raises(UserError, match="padding_side"):
        load_tokenizer("bundled", padding_side="middle")


def test_local_folder_without_pad_token_falls_back_to_eos(tmp_path):
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(tokenizer_file=str(BUNDLED_TOKENIZER_DIR / "tokenizer.json"), eos_token=EOS_TOKEN)
    plain.save_pretrained(str(tmp_path))
    tok = load_tokenizer(str(tmp_path))
    assert tok.pad_token == tok.eos_token == EOS_TOKEN


def test_missing_local_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_tokenizer(str(tmp_path / "nope"))


def test_unreachable_hub_names_the_id_and_the_local_path_fix(hub_offline):
    with pytest.raises(UserError) as err:
        load_tokenizer("EleutherAI/gpt-neox-20b")
    message = str(err.value)
    assert "\n" not in message
    assert "'EleutherAI/gpt-neox-20b'" in message and "--tokenizer /path/to/dir" in message


@pytest.mark.slow
def test_build_script_reproduces_the_shipped_tokenizer(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_tokenizer.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / name).read_text() == (BUNDLED_TOKENIZER_DIR / name).read_text(), name
