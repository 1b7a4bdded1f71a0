"""Finding the last user message of a rendered chat prompt, for several real template styles."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer
from vllm import SamplingParams

from enhanced_llm.cache.chat_turns import ChatLayout
from enhanced_llm.cache.keys import KeyBuilder
from enhanced_llm.models import build_model

CHATML = (
    "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n'"
    " + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
SYSTEM = {"role": "system", "content": "You are a helpful assistant. Answer concisely."}


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(build_model("tiny")))


def render(tok, messages):
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("template", [None, CHATML, LLAMA3], ids=["embedded", "chatml", "llama3"])
def test_the_last_user_message_is_found_exactly(tokenizer, template):
    if template is not None:
        tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
        tokenizer.chat_template = template
    layout = ChatLayout.from_tokenizer(tokenizer)
    assert layout is not None
    conversations = [
        [{"role": "user", "content": "Who wrote Hamlet?"}],
        [SYSTEM, {"role": "user", "content": "Who wrote Hamlet?"}],
        [SYSTEM, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
         {"role": "user", "content": "Who wrote Hamlet?"}],
    ]
    contexts = set()
    for messages in conversations:
        text = render(tokenizer, messages)
        context, question = layout.split(text)
        assert question == "Who wrote Hamlet?"
        assert text == context + layout.opener + question + layout.closer
        contexts.add(context)
    assert len(contexts) == 3  # each conversation its own context


def test_non_chat_text_and_missing_templates(tokenizer):
    layout = ChatLayout.from_tokenizer(tokenizer)
    assert layout.split("Who wrote Hamlet?") is None
    assert layout.split(layout.opener + "   " + layout.closer) is None  # an empty question
    bare = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    bare.chat_template = None
    assert ChatLayout.from_tokenizer(bare) is None


def test_keys_compare_questions_within_one_conversation(tokenizer):
    keys = KeyBuilder({"model": "m"}, chat_layout=ChatLayout.from_tokenizer(tokenizer))
    params = SamplingParams(temperature=0.0, max_tokens=8)
    a = keys.build(render(tokenizer, [SYSTEM, {"role": "user", "content": "Who wrote Hamlet?"}]), params)
    b = keys.build(render(tokenizer, [SYSTEM, {"role": "user", "content": "Who is the author of Hamlet?"}]), params)
    other_system = render(tokenizer, [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Who wrote Hamlet?"}])
    c = keys.build(other_system, params)
    plain = keys.build("Who wrote Hamlet?", params)
    assert (a.question, b.question, c.question, plain.question) == ("Who wrote Hamlet?", "Who is the author of Hamlet?",
                                                                    "Who wrote Hamlet?", "Who wrote Hamlet?")
    assert a.scope == b.scope  # same conversation: paraphrases may match
    assert len({a.scope, c.scope, plain.scope}) == 3  # another system prompt, or no chat at all: never
    assert len({a.exact, c.exact, plain.exact}) == 3
    without_layout = KeyBuilder({"model": "m"}).build(render(tokenizer, [SYSTEM, {"role": "user", "content": "Who wrote Hamlet?"}]), params)
    assert without_layout.exact == a.exact  # the exact key is the whole prompt's either way
