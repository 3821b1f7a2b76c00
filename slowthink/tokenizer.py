"""Chat rendering (System-1 / System-2) and small character-level tokenizers in Hugging Face format.

The chat template follows the Qwen3 convention::

    tok.apply_chat_template(msgs, add_generation_prompt=True, enable_thinking=False)
        -> ...<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n      (System-1: answer directly)
    tok.apply_chat_template(msgs, add_generation_prompt=True, enable_thinking=True)
        -> ...<|im_start|>assistant\\n<think>\\n                     (System-2: think first)

One departure from Qwen3: the System-2 generation prompt already opens ``<think>`` (as DeepSeek-R1's
template does). A hybrid model trained on both modes would otherwise face the same prefix for an empty
and a full think block and could not tell which the user asked for.

Assistant turns carry ``reasoning_content`` (DeepSeek/vLLM's field); the template marks what the model
generates with ``{% generation %}`` so ``return_assistant_tokens_mask=True`` gives the loss mask.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from .chat import Mode, check_mode

IM_START, IM_END, PAD, UNK = "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<unk>"
THINK_TOKENS = ("<think>", "</think>")
# Role names as single tokens: the template repeats them in every example, and on a CPU budget a
# third of a short example's compute was going to spelling out "assistant".
ROLE_TOKENS = ("system", "user", "assistant")

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if message.get('reasoning_content') is not none -%}"
    "{{- '<think>\\n' -}}"
    "{%- generation -%}"
    "{{- message['reasoning_content'] + '\\n</think>\\n\\n' + message['content'] + '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{%- else -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}"
    "{%- endif -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- else -%}{{- '<think>\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)

CHARSET = "\n\t" + "".join(c for c in string.printable if c not in "\t\n\r\x0b\x0c")


def build_char_tokenizer(charset: str = CHARSET):
    """A character-level tokenizer (tokenizers BPE with no merges) wrapped for transformers."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, UNK, IM_START, IM_END]
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in dict.fromkeys(charset):
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK, fuse_unk=False))
    core.decoder = decoders.Fuse()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    # Think tags are ordinary added tokens (as in Qwen3): kept when decoding with skip_special_tokens.
    core.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS + ROLE_TOKENS])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=IM_END, pad_token=PAD, unk_token=UNK,
                                  padding_side="left", model_max_length=4096)
    tok.chat_template = CHAT_TEMPLATE
    return tok


@dataclass(frozen=True)
class Rendered:
    ids: list[int]
    mask: list[int]  # 1 where the token is the assistant's (counted by the loss)
    prompt_len: int


def render_prompt(tok, messages: list[dict], mode: Mode) -> list[int]:
    """Token ids of the generation prompt for a conversation in the given mode."""
    check_mode(mode)
    out = tok.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=(mode == Mode.SYSTEM2),
                                  tokenize=True, return_dict=False)
    if isinstance(out, dict) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    return list(out)


def render_example(tok, messages: list[dict], mode: Mode, completion: str) -> Rendered:
    """Prompt + completion (+ end-of-turn) ids with the loss mask over the completion only.

    Equivalent to rendering the full conversation with the template and its assistant mask (tested),
    but renders the prompt once, which matters when building thousands of examples per second.
    """
    prompt = render_prompt(tok, messages, mode)
    answer = tok(completion + IM_END, add_special_tokens=False)["input_ids"]
    return Rendered(ids=prompt + answer, mask=[0] * len(prompt) + [1] * len(answer), prompt_len=len(prompt))


def end_of_turn_ids(tok) -> list[int]:
    """Token ids that end an assistant turn."""
    ids = {tok.convert_tokens_to_ids(IM_END)} if IM_END in tok.get_vocab() else set()
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return sorted(i for i in ids if i is not None)
