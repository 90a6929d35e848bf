"""The demo model: a tiny Llama made on this machine, so the stack runs with no model hub.

It is a normal HF-format directory (config.json, safetensors weights, tokenizer.json, chat
template), so vLLM loads it through the same path as a real model. The weights are random
(seeded), so its text is gibberish; it exists to exercise serving, not to answer questions.
The shape is the smallest that vLLM's CPU attention accepts (head_dim 64; 16 is rejected).
A second, smaller shape (`source: demo-small`: half the width, half the layers, the same tokenizer)
lets a plan serve two different models on the CPU (deploy/plans/cpu-two-models.yaml).

Run `python -m deploy.demo_model [demo-small]` to make one (or print where it is).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEMO_VERSION = 1
"""Bump when the recipe changes, so an old cached copy is made anew."""

SEED = 1234
VOCAB_SIZE = 512
SPECIAL_TOKENS = ["<|begin|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|pad|>"]
CHAT_TEMPLATE = (
    "{{ '<|begin|>' }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
# A few sentences to learn byte-pair merges from; the tokenizer only has to be deterministic
# and cover every byte (byte-level BPE does), not to be good.
TRAINING_TEXT = [
    "Tandem routes interactive chat to a tensor-parallel replica and batch work to a pipeline-parallel one.",
    "Two linked boxes share one endpoint; the gateway classifies each request and picks a replica.",
    "The quick brown fox jumps over the lazy dog while the engine schedules another decode step.",
    "Latency matters for people typing; throughput matters for jobs that summarise a thousand files.",
    "Hello! How can I help you today? Please write a short poem about the sea and the stars.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000, punctuation: ; , . ! ? ( ) [ ] { } \" ' -",
]


def cache_dir() -> Path:
    """Where generated models live: $TANDEM_CACHE, else ~/.cache/tandem."""
    return Path(os.environ.get("TANDEM_CACHE", Path.home() / ".cache" / "tandem"))


@dataclass(frozen=True)
class DemoShape:
    """A demo model's Llama shape and the cache folder it is made in."""

    folder: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int


SHAPES = {
    "demo": DemoShape("demo-llama", 256, 512, 4, 4, 2),
    "demo-small": DemoShape("demo-small-llama", 128, 256, 2, 2, 2),
}
"""Each demo model by its plan `source` (deploy.plan.DEMO_SOURCES); head_dim is 64 in both."""


def demo_model_dir(source: str = "demo") -> Path:
    return cache_dir() / f"{SHAPES[source].folder}-v{DEMO_VERSION}"


def ensure_demo_model(source: str = "demo") -> Path:
    """Return the directory of the demo model `source` names, making it first if it is missing
    (a few seconds)."""
    target = demo_model_dir(source)
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so a crash never leaves a half-written model behind
    # and two processes making it at once both end with a whole one.
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=target.parent))
    try:
        _write_tokenizer(staging)
        _write_model(staging, SHAPES[source])
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_tokenizer(directory: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|begin|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)


def _write_model(directory: Path, shape: DemoShape) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        head_dim=64,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True)
    GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    ).save_pretrained(directory)
    (directory / "tandem-demo.json").write_text(
        json.dumps({"version": DEMO_VERSION, "seed": SEED, "note": "random weights, generated locally"})
    )


def main() -> None:
    print(ensure_demo_model(*sys.argv[1:2]))


if __name__ == "__main__":
    main()
