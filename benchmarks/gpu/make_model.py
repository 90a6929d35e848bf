"""A Llama-3.1-8B-shaped model directory with no weights, for vLLM's `--load-format dummy`.

    python benchmarks/gpu/make_model.py /tmp/tandem-m8b

No model hub is reachable from the GPU machine: vLLM builds the real model (Llama-3.1-8B's
shape: hidden 4096, MLP 14336, 32 layers, 32 query and 8 KV heads of 128, bf16) with random
weights, so its kernels, CUDA graphs, memory and speed are those of the real model; only its
text is gibberish. The tokenizer is the demo model's (deploy/demo_model.py), and the vocabulary
is sized to it so that every sampled id decodes. Shape from the model's public config
(huggingface.co/meta-llama/Llama-3.1-8B-Instruct, config.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from deploy.demo_model import VOCAB_SIZE, ensure_demo_model

LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def make_model(directory: Path) -> Path:
    demo = ensure_demo_model()
    directory.mkdir(parents=True, exist_ok=True)
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "special_tokens_map.json",
        "generation_config.json",
    ):
        if (demo / name).is_file():
            shutil.copy(demo / name, directory / name)
    demo_config = json.loads((demo / "config.json").read_text())
    tokens = {k: demo_config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in demo_config}
    (directory / "config.json").write_text(json.dumps({**LLAMA_31_8B, **tokens, "vocab_size": VOCAB_SIZE}, indent=1))
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    print(make_model(parser.parse_args().directory))


if __name__ == "__main__":
    main()
