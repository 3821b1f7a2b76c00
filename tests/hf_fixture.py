"""A small pretrained-style chat model folder, built locally: a Qwen3-architecture model from a config (hidden 64,
2 layers), a byte-level BPE tokenizer trained on local text (vocabulary ~500), and a Qwen3-style chat template with
the ``enable_thinking`` switch written the way the real Qwen3 template writes it (generation prompt
``<|im_start|>assistant\\n``; with ``enable_thinking=False`` the empty think block). Saved with ``save_pretrained``,
so plain ``transformers`` and ``peft`` load it. Tests get it once per session (see ``conftest``-free use:
``build_qwen3_folder(tmp_path_factory.mktemp(...))`` in a module-scoped fixture)."""

from __future__ import annotations

import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The real Qwen3 template's shape, without tools: an assistant turn with reasoning is written inside
# <think>...</think>; the generation prompt opens no think block unless thinking is switched off.
QWEN3_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}"
    "{%- set content = message.content %}"
    "{%- if message.reasoning_content is string %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + message.reasoning_content.strip('\\n') + '\\n</think>\\n\\n'"
    " + content.lstrip('\\n') }}"
    "{%- else %}{{- '<|im_start|>assistant\\n' + content }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

# A template with no thinking switch (Llama-3-like turn markers), for the fallback.
PLAIN_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def corpus(lines: int = 3000, seed: int = 0) -> list[str]:
    """Training text for the tokenizer: the repo's docs plus arithmetic lines (so digits and operators merge)."""
    rng = random.Random(seed)
    text = [p.read_text() for p in sorted((REPO / "docs").glob("*.md"))]
    text += [f"{rng.randint(0, 999)} {rng.choice('+-*')} {rng.randint(0, 999)} = {rng.randint(0, 9999)}"
             for _ in range(lines)]
    return text


def build_bpe_tokenizer(vocab_size: int = 500, template: str = QWEN3_TEMPLATE):
    """Byte-level BPE trained on :func:`corpus`, with Qwen3's special and think tokens, wrapped for transformers."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(corpus(), trainer)
    core.add_tokens([AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  padding_side="left", model_max_length=4096)
    tok.chat_template = template
    return tok


def qwen3_config(tok, **overrides):
    from transformers import Qwen3Config

    kw = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, max_position_embeddings=1024, tie_word_embeddings=True,
              initializer_range=0.3,  # peaked logits: greedy outputs differ between prompts and after updates
              bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return Qwen3Config(**{**kw, **overrides})


def build_qwen3_folder(folder: str | Path, seed: int = 0, template: str = QWEN3_TEMPLATE, **config) -> Path:
    """Write the model and tokenizer to ``folder`` (``save_pretrained``) and return it."""
    from slowthink.models import init_from_config

    tok = build_bpe_tokenizer(template=template)
    model = init_from_config(qwen3_config(tok, **config), tok, seed=seed)
    folder = Path(folder)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _digit_share():
    from slowthink.chat import Mode
    from slowthink.tasks import Arithmetic
    from slowthink.tasks.base import Score

    class DigitShare(Arithmetic):
        """Arithmetic problems rewarded by the share of digits in the completion: a reward that varies between
        the samples of an untrained model, so RL tests get non-zero advantages."""

        def score(self, problem, completion, mode=Mode.SYSTEM2):
            return Score(reward=sum(c.isdigit() for c in completion) / max(1, len(completion)), answer=None,
                         well_formed=False)

    return DigitShare


DigitShare = _digit_share()


def _fixture():
    import pytest

    @pytest.fixture(scope="session")
    def qwen3_dir(tmp_path_factory) -> str:
        """The Qwen3-style model folder, built once per test session."""
        return str(build_qwen3_folder(tmp_path_factory.mktemp("qwen3") / "model"))

    return qwen3_dir


qwen3_dir = _fixture()  # import it into a test module: ``from hf_fixture import qwen3_dir``
