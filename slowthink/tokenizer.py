"""Chat rendering (System-1 / System-2) and small character-level tokenizers in Hugging Face format.

The chat template follows the Qwen3 convention::

    tok.apply_chat_template(msgs, add_generation_prompt=True, enable_thinking=False)
        -> ...<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n      (System-1: answer directly)
    tok.apply_chat_template(msgs, add_generation_prompt=True, enable_thinking=True)
        -> ...<|im_start|>assistant\\n<think>\\n                     (System-2: think first)

One departure from Qwen3: the System-2 generation prompt already opens ``<think>`` (as DeepSeek-R1's
template does). A hybrid model trained on both modes would otherwise face the same prefix for an empty
and a full think block and could not tell which the user asked for.

Any model's own template (a pretrained model's tokenizer) goes through the same two functions,
:func:`render_prompt` and :func:`render_example`, adapted in one place (:func:`adapt_prompt`):

- System-2: rendered with ``enable_thinking=True``. If the prompt does not end inside an open think block
  (Qwen3's real template leaves ``<think>`` to the model), ``<think>\n`` is appended, so every System-2
  completion is ``reasoning\n</think>\n\nanswer`` whatever the template.
- System-1: rendered with ``enable_thinking=False``; Qwen3's template writes the empty think block itself.
- A template with no thinking switch (no ``enable_thinking`` in it, e.g. Llama 3's): System-1 is its plain
  generation prompt, System-2 the same with ``<think>\n`` appended (no system prompt is added: the opened
  block is what asks for reasoning, and SFT teaches the format).
- A tokenizer without a chat template is refused with a clear error.
- The end of an assistant turn is ``<|im_end|>`` where the vocabulary has it, else the tokenizer's eos token.

Assistant turns carry ``reasoning_content`` (DeepSeek/vLLM's field); the template marks what the model
generates with ``{% generation %}`` so ``return_assistant_tokens_mask=True`` gives the loss mask.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from .chat import (THINK_CLOSE, THINK_OPEN, TOOL_CALL_CLOSE, TOOL_CALL_OPEN, TOOL_RESPONSE_CLOSE, TOOL_RESPONSE_OPEN,
                   Mode, check_mode)

IM_START, IM_END, PAD, UNK = "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<unk>"
THINK_TOKENS = ("<think>", "</think>")
# Role names as single tokens: the template repeats them in every example, and on a CPU budget a
# third of a short example's compute was going to spelling out "assistant".
ROLE_TOKENS = ("system", "user", "assistant")
TOOL_TOKENS = (TOOL_CALL_OPEN, TOOL_CALL_CLOSE, TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE)

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


def build_char_tokenizer(charset: str = CHARSET, number_group: int = 1, tool_tokens: bool = False):
    """A character-level tokenizer wrapped for transformers.

    ``number_group`` > 1 reads runs of digits left to right in groups of up to that many digits, one token each
    (``1234567`` -> ``123 456 7``, as GPT-4's and Llama 3's tokenizers split numbers): a 12-digit number is four
    tokens to copy instead of twelve. ``tool_tokens`` makes the tool-call and tool-response tags single tokens,
    as they are in Qwen3's vocabulary. Both default off: the plain vocabulary is one token per character.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if number_group < 1:
        raise ValueError(f"number_group must be >= 1, got {number_group}")
    specials = [PAD, UNK, IM_START, IM_END]
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in dict.fromkeys(charset):
        vocab.setdefault(ch, len(vocab))
    if number_group == 1:
        core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK, fuse_unk=False))
    else:
        for width in range(2, number_group + 1):
            for n in range(10 ** width):
                vocab[f"{n:0{width}d}"] = len(vocab)
        core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
        # every non-digit character is a piece of its own, digits in left-aligned groups
        core.pre_tokenizer = pre_tokenizers.Split(Regex(rf"[0-9]{{1,{number_group}}}|[^0-9]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    # Think tags are ordinary added tokens (as in Qwen3): kept when decoding with skip_special_tokens.
    added = THINK_TOKENS + ROLE_TOKENS + (TOOL_TOKENS if tool_tokens else ())
    core.add_tokens(plain_added_tokens(added))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=IM_END, pad_token=PAD, unk_token=UNK,
                                  padding_side="left", model_max_length=4096)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def plain_added_tokens(texts) -> list:
    """``texts`` as ordinary added tokens (each one token, kept when decoding with skip_special_tokens)."""
    from tokenizers import AddedToken

    return [AddedToken(t, special=False, normalized=False) for t in texts]


def add_tool_tokens(model, tok) -> int:
    """The tool tags as single tokens in a model and tokenizer trained without them (new embedding rows, as
    special tokens are added to a pretrained model); returns how many were added (0 when already there)."""
    added = tok.add_tokens(plain_added_tokens(TOOL_TOKENS))
    if added:
        model.resize_token_embeddings(len(tok))
    return added


@dataclass(frozen=True)
class Rendered:
    ids: list[int]
    mask: list[int]  # 1 where the token is the assistant's (counted by the loss)
    prompt_len: int


def render_prompt(tok, messages: list[dict], mode: Mode) -> list[int]:
    """Token ids of the generation prompt for a conversation in the given mode (any model's template, adapted
    to this project's think convention by :func:`adapt_prompt`)."""
    mode = check_mode(mode)
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"tokenizer {getattr(tok, 'name_or_path', '') or type(tok).__name__!r} has no chat_template: "
                         "give a model folder whose tokenizer has one (tokenizer_config.json / chat_template.jinja)")
    text = tok.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=(mode == Mode.SYSTEM2),
                                   tokenize=False)
    return list(tok(adapt_prompt(text, mode), add_special_tokens=False)["input_ids"])


def adapt_prompt(text: str, mode: Mode) -> str:
    """A rendered generation prompt in this project's convention: a System-2 prompt ends inside an opened think
    block (``<think>\n`` appended when the template did not open one, as Qwen3's real template does not); a
    System-1 prompt is the template's own (with Qwen3's empty think block when the template writes one)."""
    if mode == Mode.SYSTEM2 and not opens_think(text):
        return text + THINK_OPEN + "\n"
    return text


def opens_think(text: str) -> bool:
    """Whether ``text`` ends inside an open think block (its last ``<think>`` is not closed after it)."""
    start = text.rfind(THINK_OPEN)
    return start >= 0 and text.find(THINK_CLOSE, start) < 0


def end_of_turn_id(tok) -> int:
    """The token that ends an assistant turn: ``<|im_end|>`` where the vocabulary has it, else eos."""
    i = tok.convert_tokens_to_ids(IM_END)  # not get_vocab(): a 150k-entry dict built per call
    if i is not None and tok.convert_ids_to_tokens(i) == IM_END:  # else None or the unknown token's id
        return i
    if tok.eos_token_id is None:
        raise ValueError("tokenizer has neither <|im_end|> nor an eos token: cannot end an assistant turn")
    return tok.eos_token_id


def render_example(tok, messages: list[dict], mode: Mode, completion: str) -> Rendered:
    """Prompt + completion (+ end-of-turn) ids with the loss mask over the completion only.

    Equivalent to rendering the full conversation with the template and its assistant mask (tested),
    but renders the prompt once, which matters when building thousands of examples per second. The
    completion is tokenised on its own, after the prompt's ids: what the model sees when it generates it.
    """
    prompt = render_prompt(tok, messages, mode)
    answer = list(tok(completion, add_special_tokens=False)["input_ids"]) + [end_of_turn_id(tok)]
    return Rendered(ids=prompt + answer, mask=[0] * len(prompt) + [1] * len(answer), prompt_len=len(prompt))


def end_of_turn_ids(tok) -> list[int]:
    """Token ids that end an assistant turn."""
    ids = {tok.convert_tokens_to_ids(IM_END)} if IM_END in tok.get_vocab() else set()
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return sorted(i for i in ids if i is not None)
