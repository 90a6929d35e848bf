"""Model architectures: what a forward pass reads and computes, from a config.json.

`resolve_model` takes an alias of a shipped model (data/models/<alias>.yaml, which holds the
relevant part of its config.json with the source), its hub id, or the path of a local
HF-format model directory, and returns a `ModelArchitecture`: layer shapes, expert counts,
sliding-window layers and the storage format of each weight group (BF16, FP8, MXFP4, ...).
Everything the step-cost model needs is a method here, per layer, so that MoE expert reads and
sliding-window KV are counted where they happen.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuner.perfmodel.sourced import DATA_DIR, read_yaml

MODELS_DIR = DATA_DIR / "models"

BYTES_PER_PARAM: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "q8_0": 34 / 32,  # llama.cpp Q8_0: 32 int8 values + one fp16 scale
    "mxfp4": 17 / 32,  # OCP MX FP4: 32 4-bit values + one 8-bit shared exponent
    "nvfp4": 9 / 16,  # NVIDIA FP4: 16 4-bit values + one fp8 scale
}
"""Storage bytes per parameter, block scales included."""

WeightDtype = Literal["fp32", "bf16", "fp16", "fp8", "int8", "q8_0", "mxfp4", "nvfp4"]
LayerType = Literal["full_attention", "sliding_attention"]

_TORCH_DTYPES: dict[str, WeightDtype] = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


class WeightFormats(BaseModel):
    """Storage format of each weight group (they differ: gpt-oss keeps experts in MXFP4 and
    attention, router and embeddings in BF16)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attention: WeightDtype = "bf16"
    mlp: WeightDtype = Field("bf16", description="Dense MLP, or every expert of a MoE layer.")
    embedding: WeightDtype = "bf16"
    lm_head: WeightDtype = "bf16"


class ModelArchitecture(BaseModel):
    """A decoder-only transformer, dense or mixture-of-experts, as the performance model sees it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    hub_id: str | None = None
    num_layers: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_kv_heads: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    intermediate_size: int = Field(ge=1, description="Dense MLP width, or one expert's width for MoE.")
    vocab_size: int = Field(ge=1)
    tie_word_embeddings: bool = False
    num_experts: int = Field(0, ge=0, description="0 for a dense model.")
    experts_per_token: int = Field(0, ge=0)
    sliding_window: int | None = Field(None, ge=1)
    layer_types: tuple[LayerType, ...] = ()
    weights: WeightFormats = WeightFormats()
    kv_cache_dtype: WeightDtype = "bf16"

    @model_validator(mode="after")
    def _consistent(self) -> ModelArchitecture:
        if self.layer_types and len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers")
        if "sliding_attention" in self.layer_types and self.sliding_window is None:
            raise ValueError("sliding_attention layers need a sliding_window")
        if self.num_experts and not 0 < self.experts_per_token <= self.num_experts:
            raise ValueError("a MoE model needs 0 < experts_per_token <= num_experts")
        return self

    # ---- shapes -------------------------------------------------------------------------------

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def layer_type(self, layer: int) -> LayerType:
        return self.layer_types[layer] if self.layer_types else "full_attention"

    def attended_tokens(self, layer: int, context: float) -> float:
        """Tokens of KV one query reads in `layer` at `context` length (a sliding layer stops at its window)."""
        if self.layer_type(layer) == "sliding_attention":
            return min(context, float(self.sliding_window or context))
        return context

    def kv_heads_per_device(self, tp: int) -> int:
        """KV heads each TP rank holds; fewer heads than ranks are replicated, as vLLM does."""
        return math.ceil(self.num_kv_heads / tp)

    # ---- parameter counts ---------------------------------------------------------------------

    @property
    def attention_params(self) -> int:
        """Q, K, V and O projections of one layer."""
        q = self.num_attention_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        return self.hidden_size * (2 * q + 2 * kv)

    @property
    def expert_params(self) -> int:
        """One gated MLP (gate, up, down): one expert of a MoE layer, or the dense MLP."""
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def router_params(self) -> int:
        return self.hidden_size * self.num_experts

    @property
    def mlp_params(self) -> int:
        """All MLP weights of one layer (every expert, for MoE)."""
        return self.expert_params * max(self.num_experts, 1) + self.router_params

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def total_params(self) -> int:
        return self.num_layers * (self.attention_params + self.mlp_params) + self.embedding_params + self.lm_head_params

    @property
    def active_params_per_token(self) -> int:
        """Parameters one token multiplies through (the embedding row lookup is not a matmul)."""
        experts = self.experts_per_token if self.is_moe else 1
        per_layer = self.attention_params + experts * self.expert_params + self.router_params
        return self.num_layers * per_layer + self.vocab_size * self.hidden_size

    # ---- bytes --------------------------------------------------------------------------------

    def attention_bytes(self, tp: int = 1) -> float:
        """Attention weight bytes of one layer on one TP rank (Q/O split; K/V split or replicated)."""
        q = self.num_attention_heads * self.head_dim
        kv = self.kv_heads_per_device(tp) * self.head_dim
        params = self.hidden_size * (2 * q / tp + 2 * kv)
        return params * BYTES_PER_PARAM[self.weights.attention]

    def expert_bytes(self, tp: int = 1) -> float:
        """Bytes of one expert (or the dense MLP) on one TP rank."""
        return self.expert_params / tp * BYTES_PER_PARAM[self.weights.mlp]

    @property
    def router_bytes(self) -> float:
        return self.router_params * BYTES_PER_PARAM[self.weights.attention]

    def layer_bytes(self, tp: int = 1) -> float:
        """All weight bytes of one layer on one TP rank."""
        return self.attention_bytes(tp) + self.expert_bytes(tp) * max(self.num_experts, 1) + self.router_bytes

    def embedding_bytes(self, tp: int = 1) -> float:
        return self.embedding_params / tp * BYTES_PER_PARAM[self.weights.embedding]

    def lm_head_bytes(self, tp: int = 1) -> float:
        """Bytes the output projection reads per step (the tied embedding when weights are tied)."""
        dtype = self.weights.embedding if self.tie_word_embeddings else self.weights.lm_head
        return self.vocab_size * self.hidden_size / tp * BYTES_PER_PARAM[dtype]

    @property
    def weight_bytes_total(self) -> float:
        return (
            self.num_layers * self.layer_bytes()
            + self.embedding_bytes()
            + (0.0 if self.tie_word_embeddings else self.lm_head_bytes())
        )

    def kv_bytes_per_token_layer(self, tp: int = 1) -> float:
        """K and V of one token in one layer on one TP rank."""
        return 2 * self.kv_heads_per_device(tp) * self.head_dim * BYTES_PER_PARAM[self.kv_cache_dtype]

    @property
    def kv_bytes_per_token(self) -> float:
        """K and V of one token over all layers (a sliding layer stops growing at its window:
        see `kv_bytes_for_sequence`)."""
        return self.num_layers * self.kv_bytes_per_token_layer()

    def kv_bytes_for_sequence(self, length: int, layers: range | None = None, tp: int = 1) -> float:
        """KV cache one sequence of `length` tokens holds in `layers` on one TP rank."""
        layers = layers if layers is not None else range(self.num_layers)
        tokens = sum(self.attended_tokens(layer, length) for layer in layers)
        return tokens * self.kv_bytes_per_token_layer(tp)

    # ---- placement ----------------------------------------------------------------------------

    def stage_layers(self, pp: int) -> list[range]:
        """Layers of each pipeline stage, split as vLLM's get_pp_indices does (even shares, the
        remainder going to the stages before the last, which also holds the LM head)."""
        if pp > self.num_layers:
            raise ValueError(f"pipeline_parallel_size {pp} exceeds {self.num_layers} layers")
        sizes = [self.num_layers // pp] * pp
        for i in range(2, self.num_layers % pp + 2):
            sizes[-i] += 1
        starts = [sum(sizes[:i]) for i in range(pp)]
        return [range(s, s + n) for s, n in zip(starts, sizes, strict=True)]

    def stage_weight_bytes(self, tp: int, pp: int) -> list[float]:
        """Weight bytes on one device of each pipeline stage (embedding on the first, LM head on the last)."""
        stages = self.stage_layers(pp)
        out = [len(layers) * self.layer_bytes(tp) for layers in stages]
        out[0] += self.embedding_bytes(tp)
        if not self.tie_word_embeddings or pp > 1:
            out[-1] += self.lm_head_bytes(tp)
        return out

    def weights_per_device_gb(self, tp: int = 1, pp: int = 1) -> float:
        """Largest weight footprint on any one device of a tp x pp replica, in GB (1e9 bytes)."""
        return max(self.stage_weight_bytes(tp, pp)) / 1e9

    def with_weights(self, **formats: WeightDtype) -> ModelArchitecture:
        """The same architecture stored differently, e.g. `with_weights(attention="q8_0")`."""
        return self.model_copy(update={"weights": self.weights.model_copy(update=formats)})


# ---- reading config.json ----------------------------------------------------------------------


def from_hf_config(config: dict[str, Any], name: str, hub_id: str | None = None) -> ModelArchitecture:
    """Build the architecture from an HF config.json mapping (dense or MoE; nested text_config of
    multimodal models; sliding-window layer types; MXFP4 / FP8 quantization configs)."""
    text = config.get("text_config") or config
    layers = int(text["num_hidden_layers"])
    heads = int(text["num_attention_heads"])
    hidden = int(text["hidden_size"])
    experts = int(text.get("num_local_experts") or text.get("num_experts") or 0)
    width = (
        int(text.get("moe_intermediate_size") or text["intermediate_size"])
        if experts
        else int(text["intermediate_size"])
    )
    layer_types = _layer_types(text, layers)
    dtype_name = config.get("torch_dtype") or config.get("dtype") or text.get("torch_dtype") or "bfloat16"
    base: WeightDtype = _TORCH_DTYPES.get(str(dtype_name), "bf16")
    return ModelArchitecture(
        name=name,
        hub_id=hub_id,
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or hidden // heads),
        intermediate_size=width,
        vocab_size=int(text["vocab_size"]),
        tie_word_embeddings=bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
        num_experts=experts,
        experts_per_token=int(text.get("num_experts_per_tok") or text.get("experts_per_token") or 0) if experts else 0,
        sliding_window=text.get("sliding_window") if "sliding_attention" in layer_types else None,
        layer_types=layer_types,
        weights=_weight_formats(config.get("quantization_config") or text.get("quantization_config"), base),
        kv_cache_dtype=base if base != "fp32" else "bf16",
    )


def _layer_types(text: dict[str, Any], layers: int) -> tuple[LayerType, ...]:
    """HF `layer_types`, or a repeated `layer_pattern` (a shorthand of the shipped alias files),
    or every layer sliding when only `sliding_window` is set (Mistral-7B style)."""
    if text.get("layer_types"):
        return tuple(text["layer_types"])
    if text.get("layer_pattern"):
        pattern: list[LayerType] = text["layer_pattern"]
        return tuple(pattern[i % len(pattern)] for i in range(layers))
    if text.get("sliding_window") and text.get("use_sliding_window", True) and text.get("model_type") == "mistral":
        sliding: tuple[LayerType, ...] = ("sliding_attention",)
        return sliding * layers
    return ()


def _weight_formats(quantization: dict[str, Any] | None, base: WeightDtype) -> WeightFormats:
    method = (quantization or {}).get("quant_method")
    if method == "mxfp4":  # gpt-oss: experts only; attention, router, embeddings stay in BF16
        return WeightFormats(attention=base, mlp="mxfp4", embedding=base, lm_head=base)
    if method == "fp8":  # linear layers; embeddings and LM head stay in the base dtype
        return WeightFormats(attention="fp8", mlp="fp8", embedding=base, lm_head=base)
    if method in ("modelopt_fp4", "nvfp4"):
        return WeightFormats(attention="nvfp4", mlp="nvfp4", embedding=base, lm_head=base)
    if method is not None:
        raise ValueError(f"quantization method {method!r} is not modelled (known: mxfp4, fp8, nvfp4)")
    return WeightFormats(attention=base, mlp=base, embedding=base, lm_head=base)


# ---- resolving names ----------------------------------------------------------------------------


def known_models() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.yaml"))


@cache
def _shipped() -> dict[str, dict[str, Any]]:
    return {p.stem: read_yaml(p) for p in MODELS_DIR.glob("*.yaml")}


@cache
def resolve_model(alias_or_path: str) -> ModelArchitecture:
    """The architecture of a shipped alias ('gpt-oss-120b'), its hub id ('openai/gpt-oss-120b'),
    or a local HF-format model directory (its config.json is read)."""
    path = Path(alias_or_path).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ValueError(f"{path} has no config.json (expected an HF-format model directory)")
        return from_hf_config(json.loads(config_file.read_text()), name=path.name)
    for alias, entry in _shipped().items():
        if alias_or_path in (alias, entry["hub_id"]):
            return from_hf_config(entry["config"], name=alias, hub_id=entry["hub_id"])
    raise ValueError(
        f"unknown model {alias_or_path!r}: not a local model directory, and not one of the known "
        f"aliases ({', '.join(known_models())}) or their hub ids"
    )
