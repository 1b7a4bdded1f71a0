"""CY-LLM compatibility: the frozen ``BaseEngine`` contract (seed 000) on vLLM and on the enhanced engine.

```python
from enhanced_llm.cyllm import create_engine

engine = create_engine("enhanced-vllm-async", stream_chunk_size=4)   # or "vllm-async", "cuda-vllm-async", "cuda-vllm"
engine.load_model("Qwen/Qwen2.5-0.5B-Instruct")
for chunk in engine.infer("你好", max_new_tokens=64, temperature=0.0):
    print(chunk, end="", flush=True)
print(engine.get_memory_usage())
engine.unload_model()
```

Engine types: ``enhanced-vllm-async`` (default: :class:`~enhanced_llm.engine.EnhancedAsyncLLM`
with the response caches), ``vllm-async`` (plain ``AsyncLLM``); CY-LLM's names
``cuda-vllm-async`` and ``cuda-vllm`` are aliases of these two (see :data:`ENGINE_ALIASES`).
The gateway routes and gRPC ``StreamPredict`` of ``enhanced-llm serve`` live in
:mod:`enhanced_llm.serving` and share :mod:`.generation` and :mod:`.chunks` with these engines.
"""

from .base import BaseEngine
from .chunks import TextChunk, TokenChunker, chunked_generate
from .engines import EnhancedVllmAsyncEngine, VllmAsyncEngine
from .factory import DEFAULT_ENGINE_TYPE, ENGINE_ALIASES, EngineFactory, create_engine
from .generation import DEFAULT_GENERATION, GenerationOptions, build_sampling_params, lora_request_for

__all__ = [
    "BaseEngine",
    "EngineFactory",
    "create_engine",
    "DEFAULT_ENGINE_TYPE",
    "ENGINE_ALIASES",
    "VllmAsyncEngine",
    "EnhancedVllmAsyncEngine",
    "GenerationOptions",
    "DEFAULT_GENERATION",
    "build_sampling_params",
    "lora_request_for",
    "TextChunk",
    "TokenChunker",
    "chunked_generate",
]
