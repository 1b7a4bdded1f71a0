"""The embedded test models build from nothing, offline, into any directory."""

from __future__ import annotations

import json

import pytest

from enhanced_llm import ConfigurationError
from enhanced_llm.models import PRESETS, build_model, resolve_model


def test_tiny_model_builds_once_with_tokenizer_and_chat_template(tmp_path):
    from transformers import AutoTokenizer

    path = build_model("tiny", root=tmp_path)
    config = json.loads((path / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] == 64  # the CPU attention kernel needs 64
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    text = tokenizer.apply_chat_template([{"role": "user", "content": "什么是AI? What is AI?"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.endswith("<|assistant|>\n")
    ids = tokenizer("什么是AI? What is AI?")["input_ids"]
    assert tokenizer.decode(ids) == "什么是AI? What is AI?"  # byte-level: lossless on any script
    mtime = (path / "model.safetensors").stat().st_mtime
    assert build_model("tiny", root=tmp_path) == path and (path / "model.safetensors").stat().st_mtime == mtime


def test_presets_and_names():
    assert set(PRESETS) == {"tiny", "bench"}
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    with pytest.raises(ConfigurationError):
        build_model("huge")
