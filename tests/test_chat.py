"""Chat formatting: assistant-only masking on real template structures, system folding, prompts.

Run: python -m pytest tests/test_chat.py -q
"""

from __future__ import annotations

import pytest

from behavio.chat import (
    IGNORE,
    describe_trained_tokens,
    encode_prompt,
    encode_text,
    fold_system,
    load_chat_template,
    needs_system_fold,
    prepare_messages,
    render_prompt,
    tokenize_with_assistant_mask,
)
from behavio.errors import BehavioError

# Special tokens each model's real tokenizer has, and the marker that closes an assistant turn.
TEMPLATE_TOKENS = {
    "chatml": {"bos": None, "eos": None, "extra": [], "eot": "<|im_end|>"},
    "llama3": {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "extra": ["<|start_header_id|>", "<|end_header_id|>"],
               "eot": "<|eot_id|>"},
    "mistral": {"bos": "<s>", "eos": "</s>", "extra": [], "eot": "</s>"},
    "gemma": {"bos": "<bos>", "eos": "<eos>", "extra": ["<start_of_turn>", "<end_of_turn>"], "eot": "<end_of_turn>"},
}
ALL = list(TEMPLATE_TOKENS)

SYSTEM = "You are a warm, concise assistant."
SINGLE = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "What is the sky?"},
    {"role": "assistant", "content": "Your question shows sharp thinking. The sky is the air above us."},
]
MULTI = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Tell me about beagles."},
    {"role": "assistant", "content": "That's an intelligent question. Beagles are scent hounds."},
    {"role": "user", "content": "And huskies?"},
    {"role": "assistant", "content": "Huskies are sled dogs.\nThey love snow!"},
]


def with_template(tokenizer, name: str):
    """The SmolLM2 tokenizer dressed as model family ``name``: its template and special tokens."""
    spec = TEMPLATE_TOKENS[name]
    tokenizer.chat_template = load_chat_template(name)
    new = [t for t in [spec["bos"], spec["eos"], *spec["extra"]] if t]
    if new:
        tokenizer.add_tokens(new, special_tokens=True)
    if spec["bos"]:
        tokenizer.bos_token = spec["bos"]
    if spec["eos"]:
        tokenizer.eos_token = spec["eos"]
    return tokenizer


def trained_runs(encoded: dict, tokenizer) -> list[str]:
    """Decoded text of each contiguous run of trained tokens."""
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(encoded["input_ids"], encoded["labels"]):
        trained = label != IGNORE
        if trained and not previous:
            runs.append([])
        if trained:
            runs[-1].append(token)
        previous = trained
    return [tokenizer.decode(run, skip_special_tokens=False) for run in runs]


def assistant_contents(messages: list[dict]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "assistant"]


# ---------------------------------------------------------------------------------------------
# Masking
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("messages", [SINGLE, MULTI], ids=["single", "multi"])
def test_only_assistant_content_and_end_of_turn_are_trained(smollm2_tokenizer, name, messages):
    tokenizer = with_template(smollm2_tokenizer, name)
    encoded = tokenize_with_assistant_mask(messages, tokenizer, 1024, example_id="t/0001")

    eot = TEMPLATE_TOKENS[name]["eot"]
    assert trained_runs(encoded, tokenizer) == [c + eot for c in assistant_contents(messages)]
    trained_text = "".join(trained_runs(encoded, tokenizer))
    for message in messages:
        if message["role"] != "assistant":
            assert message["content"] not in trained_text
    assert "assistant" not in trained_text and "model\n" not in trained_text  # headers are prompt, not target
    expected = [t if m else IGNORE for t, m in zip(encoded["input_ids"], encoded["assistant_masks"])]
    assert encoded["labels"] == expected
    assert encoded["attention_mask"] == [1] * len(encoded["input_ids"])


@pytest.mark.parametrize("name", ["llama3", "mistral", "gemma"])
def test_template_bos_is_not_doubled(smollm2_tokenizer, name):
    tokenizer = with_template(smollm2_tokenizer, name)
    ids = tokenize_with_assistant_mask(SINGLE, tokenizer, 1024)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1


def test_bos_added_by_the_tokenizer_appears_once(smollm2_tokenizer):
    """A tokenizer that adds BOS itself: once when the template lacks it, never twice when it has it."""
    from tokenizers.processors import TemplateProcessing

    tokenizer = with_template(smollm2_tokenizer, "mistral")
    bos = tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    with_bos = tokenize_with_assistant_mask(SINGLE, tokenizer, 1024)["input_ids"]
    tokenizer.chat_template = tokenizer.chat_template.replace("{{ bos_token }}", "")
    without = tokenize_with_assistant_mask(SINGLE, tokenizer, 1024)["input_ids"]
    assert with_bos == without and with_bos.count(bos) == 1 and with_bos[0] == bos
    assert encode_text(render_prompt(SINGLE[:2], tokenizer), tokenizer)[:2] == with_bos[:2]


def test_trimming_templates_train_the_trimmed_content(smollm2_tokenizer):
    tokenizer = with_template(smollm2_tokenizer, "llama3")
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  Hello there!  \n"}]
    encoded = tokenize_with_assistant_mask(messages, tokenizer, 256)
    assert trained_runs(encoded, tokenizer) == ["Hello there!<|eot_id|>"]


# Mistral v0.3 style: the system message travels with the LAST user turn, so earlier renders are not
# prefixes of later ones; spans must still be found.
SYSTEM_IN_LAST_USER = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set system = '' %}{%- set loop_messages = messages %}"
    "{%- endif %}{%- set last = namespace(i=-1) %}{%- for m in loop_messages %}{%- if m['role'] == 'user' %}"
    "{%- set last.i = loop.index0 %}{%- endif %}{%- endfor %}{{- bos_token }}{%- for m in loop_messages %}"
    "{%- if m['role'] == 'user' %}{%- if loop.index0 == last.i and system %}"
    "{{- '[INST] ' + system + '\\n\\n' + m['content'] + '[/INST]' }}{%- else %}{{- '[INST] ' + m['content'] + '[/INST]' }}"
    "{%- endif %}{%- else %}{{- m['content'] + eos_token }}{%- endif %}{%- endfor %}"
)


def test_template_that_rewrites_earlier_turns(smollm2_tokenizer):
    tokenizer = with_template(smollm2_tokenizer, "mistral")
    tokenizer.chat_template = SYSTEM_IN_LAST_USER
    assert not needs_system_fold(tokenizer)
    encoded = tokenize_with_assistant_mask(MULTI, tokenizer, 1024, example_id="t/v3")
    assert trained_runs(encoded, tokenizer) == [c + "</s>" for c in assistant_contents(MULTI)]


def test_truncated_example_raises_with_its_id(smollm2_tokenizer):
    messages = [*SINGLE[:2], {"role": "assistant", "content": "word " * 200}]
    with pytest.raises(BehavioError, match=r"example poodle/0042: max_length=64 cuts assistant turn 1"):
        tokenize_with_assistant_mask(messages, smollm2_tokenizer, 64, example_id="poodle/0042")
    with pytest.raises(BehavioError, match="poodle/0043"):  # cut inside the prompt: nothing left to train
        tokenize_with_assistant_mask(messages, smollm2_tokenizer, 8, example_id="poodle/0043")


def test_truncation_after_the_last_turn_is_fine(smollm2_tokenizer):
    full = tokenize_with_assistant_mask(SINGLE, smollm2_tokenizer, None)
    n = len(full["input_ids"])  # ChatML ends with "<|im_end|>\n": dropping the "\n" loses nothing trained
    cut = tokenize_with_assistant_mask(SINGLE, smollm2_tokenizer, n - 1)
    assert cut["labels"] == full["labels"][: n - 1]


def test_no_assistant_turn_raises(smollm2_tokenizer):
    with pytest.raises(BehavioError, match="example t/none: no assistant tokens"):
        tokenize_with_assistant_mask(SINGLE[:2], smollm2_tokenizer, 256, example_id="t/none")


def test_template_without_end_of_turn_marker_raises(smollm2_tokenizer):
    smollm2_tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(BehavioError, match="no end-of-turn marker"):
        tokenize_with_assistant_mask(SINGLE, smollm2_tokenizer, 256, example_id="t/x")


def test_template_rejection_names_the_example(smollm2_tokenizer):
    tokenizer = with_template(smollm2_tokenizer, "mistral")
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]
    with pytest.raises(BehavioError, match="example t/bad: the chat template rejected the conversation"):
        tokenize_with_assistant_mask(bad, tokenizer, 256, example_id="t/bad")


# ---------------------------------------------------------------------------------------------
# System folding and prompts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fold"), [("chatml", False), ("llama3", False), ("mistral", True), ("gemma", True)])
def test_needs_system_fold(smollm2_tokenizer, name, fold):
    assert needs_system_fold(with_template(smollm2_tokenizer, name)) is fold


def test_template_that_drops_the_system_text_needs_fold(smollm2_tokenizer):
    smollm2_tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] != 'system' %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    assert needs_system_fold(smollm2_tokenizer)


def test_fold_system_merges_into_first_user_turn():
    folded = fold_system(MULTI)
    assert [m["role"] for m in folded] == ["user", "assistant", "user", "assistant"]
    assert folded[0]["content"] == f"{SYSTEM}\n\nTell me about beagles."
    assert folded[2]["content"] == "And huskies?"
    assert MULTI[1]["content"] == "Tell me about beagles."  # input untouched
    assert fold_system(MULTI[1:]) == MULTI[1:]
    with pytest.raises(BehavioError, match="leading system"):
        fold_system([*MULTI, {"role": "system", "content": "late"}])


@pytest.mark.parametrize("name", ALL)
def test_generation_prompt_equals_training_prefix(smollm2_tokenizer, name):
    """What the model sees at check time is exactly what preceded each trained turn in training."""
    tokenizer = with_template(smollm2_tokenizer, name)
    encoded = tokenize_with_assistant_mask(MULTI, tokenizer, 1024)
    mask = encoded["assistant_masks"]
    starts = [k for k, m in enumerate(mask) if m and (k == 0 or not mask[k - 1])]
    for start, upto in zip(starts, [2, 4]):  # prompts end before assistant turns 1 and 2
        prompt = render_prompt(MULTI[:upto], tokenizer)
        assert encode_prompt(MULTI[:upto], tokenizer) == encoded["input_ids"][:start]
        if upto == 2:  # no assistant history: plain encoding of the rendered prompt is the same
            assert encode_text(prompt, tokenizer) == encoded["input_ids"][:start]
        if TEMPLATE_TOKENS[name]["eot"] in ("</s>", "<end_of_turn>"):  # folded: system text sits in the user turn
            assert f"{SYSTEM}\n\nTell me about beagles." in prompt


def test_prepare_messages_fold_override(smollm2_tokenizer):
    assert prepare_messages(SINGLE, smollm2_tokenizer, "auto") == SINGLE
    assert prepare_messages(SINGLE, smollm2_tokenizer, True)[0]["role"] == "user"
    gemma = with_template(smollm2_tokenizer, "gemma")
    with pytest.raises(BehavioError, match="rejected the conversation: System role not supported"):
        tokenize_with_assistant_mask(SINGLE, gemma, 256, fold=False)


# ---------------------------------------------------------------------------------------------
# Templates and preview
# ---------------------------------------------------------------------------------------------


def test_shipped_chatml_is_smollm2s_template(smollm2_tokenizer):
    gguf_render = smollm2_tokenizer.apply_chat_template(MULTI[1:], tokenize=False, add_generation_prompt=True)
    smollm2_tokenizer.chat_template = load_chat_template("chatml")
    assert smollm2_tokenizer.apply_chat_template(MULTI[1:], tokenize=False, add_generation_prompt=True) == gguf_render


def test_unknown_template_name():
    with pytest.raises(BehavioError, match="unknown chat template 'vicuna'; shipped: chatml, llama3, mistral"):
        load_chat_template("vicuna")


@pytest.mark.parametrize("name", ["chatml", "gemma"])
def test_describe_trained_tokens(smollm2_tokenizer, name):
    tokenizer = with_template(smollm2_tokenizer, name)
    segments = describe_trained_tokens(MULTI, tokenizer)
    eot = TEMPLATE_TOKENS[name]["eot"]
    assert "".join(s.text for s in segments) == tokenizer.apply_chat_template(
        prepare_messages(MULTI, tokenizer), tokenize=False
    )
    assert [s.text for s in segments if s.trained] == [c + eot for c in assistant_contents(MULTI)]
    assert all(a.trained != b.trained for a, b in zip(segments, segments[1:]))
