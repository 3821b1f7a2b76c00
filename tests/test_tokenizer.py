"""Character tokenizer and chat rendering (System-1 / System-2)."""

from __future__ import annotations

import random
import string

import pytest

from slowthink.tokenizer import CHARSET, IM_END, end_of_turn_ids, render_example, render_prompt

USER = [{"role": "user", "content": "347*862"}]
S1_PROMPT = "<|im_start|>user\n347*862<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
S2_PROMPT = "<|im_start|>user\n347*862<|im_end|>\n<|im_start|>assistant\n<think>\n"
COMPLETIONS = {"system1": "299114", "system2": "743*268\n2:496000 496000\n</think>\n\n299114"}


def ids_of(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_round_trip_of_printable_text(tok):
    rng = random.Random(0)
    pieces = list(CHARSET) + ["<think>", "</think>", "\n"]
    for _ in range(50):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 80)))
        assert tok.decode(ids_of(tok, text)) == text
    text = string.printable.replace("\r", "").replace("\x0b", "").replace("\x0c", "")
    assert len(ids_of(tok, text)) == len(text)  # one token per character
    assert tok.unk_token_id not in ids_of(tok, text)


def test_think_tags_are_single_tokens(tok):
    for tag in ("<think>", "</think>"):
        ids = ids_of(tok, tag)
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids) == [tag]
        assert tok.decode(ids, skip_special_tokens=True) == tag  # kept: ordinary added tokens
    assert ids_of(tok, "a<think>b</think>\n") == [*ids_of(tok, "a"), *ids_of(tok, "<think>"), *ids_of(tok, "b"),
                                                  *ids_of(tok, "</think>"), *ids_of(tok, "\n")]


def test_generation_prompts(tok):
    assert tok.apply_chat_template(USER, tokenize=False, add_generation_prompt=True, enable_thinking=False) == S1_PROMPT
    assert tok.apply_chat_template(USER, tokenize=False, add_generation_prompt=True, enable_thinking=True) == S2_PROMPT
    assert tok.apply_chat_template(USER, tokenize=False, add_generation_prompt=True) == S2_PROMPT  # default: think
    assert tok.decode(render_prompt(tok, USER, "system1")) == S1_PROMPT
    assert tok.decode(render_prompt(tok, USER, "system2")) == S2_PROMPT
    assert render_prompt(tok, USER, "system2") == ids_of(tok, S2_PROMPT)
    with_system = [{"role": "system", "content": "Be brief."}, *USER]
    system_block = "<|im_start|>system\nBe brief.<|im_end|>\n"
    assert tok.decode(render_prompt(tok, with_system, "system2")) == system_block + S2_PROMPT
    with pytest.raises(ValueError):
        render_prompt(tok, USER, "system3")


@pytest.mark.parametrize("mode", ["system1", "system2"])
def test_render_example_matches_full_template(tok, mode):
    completion = COMPLETIONS[mode]
    r = render_example(tok, USER, mode, completion)
    prompt = render_prompt(tok, USER, mode)
    assert r.prompt_len == len(prompt) and r.ids[: r.prompt_len] == prompt
    # the mask covers exactly the completion and the end-of-turn token
    assert tok.decode([i for i, m in zip(r.ids, r.mask) if m]) == completion + IM_END
    assert r.mask == [0] * r.prompt_len + [1] * (len(r.ids) - r.prompt_len)

    if mode == "system2":
        reasoning, answer = completion.split("\n</think>\n\n")
        turn = {"role": "assistant", "content": answer, "reasoning_content": reasoning}
    else:
        turn = {"role": "assistant", "content": completion}
    full = tok.apply_chat_template([*USER, turn], tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = list(full["input_ids"]), list(full["assistant_masks"])
    # the full rendering ends the turn with a "\n" separator that the model does not generate
    newline = ids_of(tok, "\n")
    assert ids == r.ids + newline
    assert mask == r.mask + [0]


def test_save_and_load_round_trip(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tok.get_vocab()
    assert loaded.chat_template == tok.chat_template
    assert (loaded.eos_token, loaded.pad_token, loaded.padding_side) == (tok.eos_token, tok.pad_token, tok.padding_side)
    assert end_of_turn_ids(loaded) == end_of_turn_ids(tok)
    for mode, completion in COMPLETIONS.items():
        assert render_prompt(loaded, USER, mode) == render_prompt(tok, USER, mode)
        assert render_example(loaded, USER, mode, completion) == render_example(tok, USER, mode, completion)
    text = "a<think>b</think>\n\t~" + IM_END
    assert ids_of(loaded, text) == ids_of(tok, text)


def test_end_of_turn_ids(tok):
    im_end = tok.convert_tokens_to_ids(IM_END)
    assert end_of_turn_ids(tok) == [im_end] and tok.eos_token_id == im_end
    assert tok.pad_token_id not in end_of_turn_ids(tok)


def test_tiny_model_fixture(tok, tiny_model):
    import torch

    assert tiny_model.config.vocab_size == len(tok)
    r = render_example(tok, USER, "system2", COMPLETIONS["system2"])
    with torch.no_grad():
        logits = tiny_model(torch.tensor([r.ids])).logits
    assert logits.shape == (1, len(r.ids), len(tok))


def test_number_groups_and_markup_tokens(tmp_path):
    from transformers import AutoTokenizer

    from slowthink.tokenizer import TOOL_TOKENS, build_char_tokenizer

    tok = build_char_tokenizer(number_group=3, tool_tokens=True)
    pieces = lambda text: tok.convert_ids_to_tokens(ids_of(tok, text))  # noqa: E731
    assert pieces("x=1234567,07") == ["x", "=", "123", "456", "7", ",", "07"]  # left-aligned groups, zeros kept
    assert pieces("<tool_call>9\n</tool_call>") == ["<tool_call>", "9", "\n", "</tool_call>"]
    assert all(len(ids_of(tok, t)) == 1 for t in TOOL_TOKENS)
    assert tok.unk_token_id not in ids_of(tok, "".join(str(n) for n in range(1000)))
    rng = random.Random(0)
    alphabet = list(CHARSET) + ["<think>", "</think>", *TOOL_TOKENS] + [str(n) for n in range(100)]
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for _ in range(50):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        assert tok.decode(ids_of(tok, text)) == text
        assert ids_of(loaded, text) == ids_of(tok, text)
    plain = build_char_tokenizer()
    assert len(ids_of(plain, "<tool_call>")) == len("<tool_call>")  # off by default: the plain vocabulary is unchanged
    with pytest.raises(ValueError, match="number_group"):
        build_char_tokenizer(number_group=0)
