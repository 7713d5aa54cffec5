"""Regenerate the bundled tokenizer: mamba_trainer/resources/tokenizer/.

    python scripts/build_tokenizer.py            # rewrites the shipped files (deterministic)
    python scripts/build_tokenizer.py --out DIR  # writes elsewhere, e.g. to diff against the shipped one

A byte-level BPE of exactly 1024 tokens (2 specials + 256 bytes + 766 merges) trained on the bundled-math
train split in the prompt format, plus a little generic English so other text still gets sensible
merges. Numbers are split into single digits before BPE, so every number is spelled with the same ten
digit tokens, which makes arithmetic much easier for small models. Byte-level means any text round-trips
exactly (``decode(encode(x)) == x``) with no unknown token.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without pip install -e .
from mamba_trainer.data import PROMPT_TEMPLATE
from mamba_trainer.mathgen import bundled_problems
from mamba_trainer.tokenizer import BUNDLED_TOKENIZER_DIR, EOS_TOKEN, PAD_TOKEN

VOCAB_SIZE = 1024

# Generic English (written for this file, public domain). It only has to be enough for common words
# and suffixes to earn merges once the math vocabulary is covered.
ENGLISH = """\
The quick brown fox jumps over the lazy dog. People often think that learning is something that
happens only in school, but most of what we know comes from everyday life: talking with friends,
reading the news, cooking dinner, fixing a bicycle, or planning a trip. When you explain an idea to
someone else, you usually understand it better yourself, because you have to put it in your own words.
Write down the question first. Then think about what information you are given and what you still need
to find. Break the problem into small steps, solve each one, and check whether the result makes sense.
If it does not, go back and look for the mistake. This is true for mathematics, for programming, and
for many other kinds of work.
The weather was cold and windy this morning, so the children wore their warm coats and hats. In the
afternoon the sun came out, and they played outside until it was time for dinner. Their parents were
happy because the garden looked beautiful after the rain.
A computer program is a list of instructions. Each instruction tells the machine what to do next: read
a value, compare two numbers, store a result, or print a message on the screen. Good programs are easy
to read, because other people will need to understand and change them later.
She said that the meeting would start at nine, but nobody arrived before ten. He asked whether they
could move it to the next week. They agreed, and everyone went back to their own projects.
Science is the careful study of the natural world through observation and experiment. Scientists
describe what they see, propose explanations, and test those explanations against new evidence.
History tells us how people lived in the past, what they believed, and why they made the choices they
made. Languages change over time, and words that were common a hundred years ago may sound strange today.
Let's think step by step. The answer is the number of items left after all the changes. Therefore the
final answer is shown on the last line. First, second, third, finally, because, however, although,
which, where, when, while, during, between, without, around, against, through, another, everything.
def solution():
    total = price * quantity
    return total
print(solution())
"""


def training_texts() -> list[str]:
    texts = [PROMPT_TEMPLATE.format(prompt=p["question"]) + p["answer"] for p in bundled_problems("train")]
    # English is a few kB against ~5 MB of math; repeating it gives its words enough counts to compete.
    return texts + ENGLISH.splitlines(keepends=True) * 50


def build() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, min_frequency=2, show_progress=False,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],  # ids 0 and 1
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(training_texts(), trainer=trainer)
    if tok.get_vocab_size() != VOCAB_SIZE:
        raise SystemExit(f"trained {tok.get_vocab_size()} tokens instead of {VOCAB_SIZE}; the corpus is too small")
    return tok


def save(tok: Tokenizer, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        model_max_length=4096,
        # Cleanup would turn " ." into "." on decode and break exact round-trips.
        clean_up_tokenization_spaces=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    # transformers 5 writes its own class name; the 4.x name loads in both major versions.
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BUNDLED_TOKENIZER_DIR)
    args = parser.parse_args()
    save(build(), args.out)
    print(f"wrote {args.out} ({VOCAB_SIZE} tokens)")


if __name__ == "__main__":
    main()
