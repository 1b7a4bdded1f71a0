"""The embedded default models: tiny random-weight Llamas built locally, once.

Nothing is downloaded. ``build_model("tiny")`` trains a byte-level BPE
tokenizer on a small built-in corpus, initialises a Llama with a fixed seed and
saves both (bf16 safetensors, tokenizer, chat template) into a cache directory.

**Their text is meaningless**: the weights are random. They exist so that tests,
demos and benchmarks run offline with real vLLM engines, and greedy decoding is
deterministic, which is what cache tests need. Real use passes any Hugging Face
model name or local path instead (``EngineArgsConfig(model="org/name")``).

Presets:

* ``tiny``  - hidden 256, 4 layers, head_dim 64 (~1 M parameters): tests and demos.
* ``bench`` - hidden 768, 12 layers, head_dim 64 (~90 M parameters): benchmarks,
  where generation must dominate the cost of a request.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EMBEDDED_MODEL_PREFIX", "ModelPreset", "PRESETS", "build_model", "resolve_model", "models_home"]

#: Model names starting with this prefix name the locally built random-weight
#: test models of this module ("embedded:tiny", "embedded:bench").
EMBEDDED_MODEL_PREFIX = "embedded:"

_BUILD_VERSION = 1

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


@dataclass(frozen=True)
class ModelPreset:
    """Shape of an embedded model."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int = 1024
    max_position_embeddings: int = 4096


PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=512),
    "bench": ModelPreset(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=2048),
}


def cache_home() -> Path:
    """The library's files: ``$ENHANCED_LLM_HOME`` or ``~/.cache/enhanced_llm``."""
    root = os.environ.get("ENHANCED_LLM_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "enhanced_llm"
    )
    return Path(root)


def models_home() -> Path:
    """Where embedded models are built: ``cache_home() / "models"``."""
    return cache_home() / "models"


def resolve_model(model: str) -> str:
    """Map ``embedded:<preset>`` to a built local path; return any other name unchanged."""
    if model.startswith(EMBEDDED_MODEL_PREFIX):
        return str(build_model(model[len(EMBEDDED_MODEL_PREFIX) :]))
    return model


def build_model(preset: str = "tiny", root: Path | None = None) -> Path:
    """Build the preset once (idempotent, safe against concurrent builders) and return its directory."""
    if preset not in PRESETS:
        from .errors import ConfigurationError

        raise ConfigurationError(f"unknown embedded model {preset!r}; choose one of {sorted(PRESETS)}")
    target = (root or models_home()) / f"{preset}-v{_BUILD_VERSION}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{preset}-", dir=target.parent))
    try:
        _write_tokenizer(staging, PRESETS[preset].vocab_size)
        _write_weights(staging, PRESETS[preset])
        try:
            staging.rename(target)  # atomic: a concurrent builder either wins or loses whole
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _corpus() -> list[str]:
    """A small mixed English/Chinese corpus: enough for BPE merges, not for meaning."""
    english = (
        "What is artificial intelligence? How does machine learning work and why does it matter? "
        "Explain the difference between a list and a tuple in Python. Convert Celsius to Fahrenheit. "
        "The quick brown fox jumps over the lazy dog. If it rains tomorrow, how much water will fall? "
        "Please summarise the main ideas of the paper, then list three questions about it. "
    )
    chinese = "什么是人工智能？机器学习是如何工作的，为什么它很重要？请解释深度学习的基本概念。今天天气怎么样？"
    return [english * 4, chinese * 4] * 8


def _write_tokenizer(directory: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        model_max_length=PRESETS["tiny"].max_position_embeddings,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(directory))


def _write_weights(directory: Path, preset: ModelPreset) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer_vocab = json.loads((directory / "tokenizer.json").read_text())["model"]["vocab"]
    config = LlamaConfig(
        vocab_size=max(preset.vocab_size, len(tokenizer_vocab) + len(SPECIAL_TOKENS)),
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        num_key_value_heads=preset.num_heads,
        max_position_embeddings=preset.max_position_embeddings,
        bos_token_id=SPECIAL_TOKENS.index("<|bos|>"),
        eos_token_id=SPECIAL_TOKENS.index("<|eos|>"),
        pad_token_id=SPECIAL_TOKENS.index("<|pad|>"),
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(directory), safe_serialization=True)
