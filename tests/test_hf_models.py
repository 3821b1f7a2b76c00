"""A pretrained-style Hugging Face chat model through the same code: its own BPE tokenizer and Qwen3-style template
(System-2 adapted to an opened think block), eval from the CLI, RL keeping the engine's token ids, dropout off in
RL, and the memory estimate."""

import json
import random

import pytest
import torch

from hf_fixture import (PLAIN_TEMPLATE, DigitShare, build_bpe_tokenizer, build_qwen3_folder,  # noqa: F401
                        qwen3_dir)
from slowthink.chat import Mode
from slowthink.config import build
from slowthink.engine import SamplingParams
from slowthink.models import load_model
from slowthink.rl.batch import collate_rows, learner_logprobs, make_rows
from slowthink.rl.rewards import RewardFn
from slowthink.rl.rollout import LocalRolloutWorker
from slowthink.tasks import Arithmetic
from slowthink.tokenizer import end_of_turn_id, render_example, render_prompt
from slowthink.train.lora import disable_dropout
from slowthink.train.memory import Estimate, Shape, estimate, is_out_of_memory, out_of_memory_advice
from slowthink.train.runlog import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")
Q = [{"role": "user", "content": "What is 12+34?"}]


def _text(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def test_qwen3_template_prompts_in_both_modes(qwen3_dir):
    _, tok = load_model(qwen3_dir)
    s2, s1 = render_prompt(tok, Q, Mode.SYSTEM2), render_prompt(tok, Q, Mode.SYSTEM1)
    # Qwen3's template opens no think block with thinking on: the project's convention appends it
    assert tok.apply_chat_template(Q, add_generation_prompt=True, enable_thinking=True,
                                   tokenize=False).endswith("<|im_start|>assistant\n")
    assert _text(tok, s2).endswith("<|im_start|>assistant\n<think>\n")
    assert tok.convert_ids_to_tokens(s2[-2:]) == ["<think>", "Ċ"]
    # thinking off: the template's own empty think block, nothing added
    assert _text(tok, s1).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # an example renders as the template renders the whole conversation (text), loss on the completion only
    r = render_example(tok, Q, Mode.SYSTEM2, "12+34=46\n</think>\n\n46")
    full = Q + [{"role": "assistant", "reasoning_content": "12+34=46", "content": "46"}]
    assert _text(tok, r.ids) + "\n" == tok.apply_chat_template(full, tokenize=False)
    assert r.mask == [0] * len(s2) + [1] * (len(r.ids) - len(s2))
    assert r.ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")


def test_template_without_thinking_switch_and_without_template():
    tok = build_bpe_tokenizer(template=PLAIN_TEMPLATE)
    assert _text(tok, render_prompt(tok, Q, Mode.SYSTEM1)).endswith("<|im_start|>assistant\n")
    assert _text(tok, render_prompt(tok, Q, Mode.SYSTEM2)).endswith("<|im_start|>assistant\n<think>\n")
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat_template"):
        render_prompt(tok, Q, Mode.SYSTEM2)


def test_end_of_turn_falls_back_to_eos():
    tok = build_bpe_tokenizer()
    assert end_of_turn_id(tok) == tok.convert_tokens_to_ids("<|im_end|>")

    class NoImEnd:  # what a Llama-3-like tokenizer answers: no such token (None, or the unknown token's id)
        eos_token_id = 7

        def convert_tokens_to_ids(self, token):
            return 0

        def convert_ids_to_tokens(self, i):
            return {0: "<unk>", 7: "<|eot_id|>"}[i]

    assert end_of_turn_id(NoImEnd()) == 7


def test_eval_cli_on_the_pretrained_style_model(qwen3_dir, tmp_path, capsys):
    from slowthink.cli import main

    out = tmp_path / "eval.json"
    rc = main(["eval", "--model", qwen3_dir, "--task", "arithmetic", "--levels", "1", "--per-level", "3",
               "--max-new-tokens", "8", "--json-out", str(out)])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())["results"]
    assert set(res) >= {"system1", "system2"}


def test_rl_learns_from_the_engines_token_ids_not_a_retokenised_text(qwen3_dir):
    """With a BPE tokenizer, re-tokenising a sampled text often gives other ids; the learner must see the sampled
    ids: then its log-probs equal the engine's (ratio 1)."""
    model, tok = load_model(qwen3_dir)
    task = Arithmetic(op="add", max_level=2)
    worker = LocalRolloutWorker(model, tok, task, RewardFn())
    worker.load_weights(None, version=0)
    problems = [task.sample_split(random.Random(i), 1, "train") for i in range(2)]
    groups = worker.rollout(problems, Mode.SYSTEM2, 4, SamplingParams(max_tokens=10, temperature=1.0, seed=1))
    comps = [c for g in groups for c in g.completions]
    assert any(tok(c.text, add_special_tokens=False)["input_ids"] != c.token_ids for c in comps), \
        "some sample re-tokenises differently (else this test shows nothing)"
    rows = make_rows(groups, torch.zeros(len(groups), 4), overlong_filter=False)
    assert [r.token_ids for r in rows] == [c.token_ids for c in comps]
    batch = collate_rows(rows, tok.pad_token_id, "cpu")
    with torch.no_grad():
        torch.testing.assert_close(learner_logprobs(model, batch, 1.0), batch["old_logp"], atol=2e-5, rtol=0)


def test_rl_trainers_run_without_dropout(tmp_path):
    """A model with attention dropout 0.1: in train mode its log-probs differ from the engine's (eval mode); GRPO
    switches dropout off at load, so the first on-policy update has ratio 1 (approx KL 0, nothing clipped)."""
    from slowthink.rl.grpo import GRPOConfig, train

    folder = build_qwen3_folder(tmp_path / "dropout", attention_dropout=0.1)
    model, tok = load_model(folder)
    task = Arithmetic(op="add", max_level=2)
    worker = LocalRolloutWorker(model, tok, task, RewardFn())
    worker.load_weights(None, version=0)
    groups = worker.rollout([task.sample_split(random.Random(0), 1, "train")], Mode.SYSTEM2, 4,
                            SamplingParams(max_tokens=10, temperature=1.0, seed=1))
    batch = collate_rows(make_rows(groups, torch.zeros(1, 4), False), tok.pad_token_id, "cpu")
    model.train()
    with torch.no_grad():
        gap = (learner_logprobs(model, batch, 1.0) - batch["old_logp"]).abs().max()
    assert gap > 1e-2, "dropout on: the learner sees another policy than the sampler"

    cfg = build(GRPOConfig, dict(init=str(folder), out=str(tmp_path / "grpo"), levels=[1], mode="system2", steps=1,
                                 prompts_per_step=2, group_size=4, max_new_tokens=10, eval_every=0, eval_per_level=0,
                                 progress=False, threads=1))
    train(cfg, task=DigitShare(op="add", max_level=2))  # a reward that varies: the learner runs
    row = next(r for r in read_metrics(tmp_path / "grpo") if "approx_kl" in r)
    assert row["learner_rows"] > 0 and row["clip_frac"] == 0 and abs(row["approx_kl"]) < 1e-6, row
    saved = json.loads((tmp_path / "grpo" / "model" / "config.json").read_text())
    assert saved["attention_dropout"] == 0.0


def test_disable_dropout_covers_modules_attributes_and_config():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32,
                                       resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1))
    assert disable_dropout(model) > 0
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert model.config.resid_pdrop == model.config.attn_pdrop == model.config.embd_pdrop == 0
    assert disable_dropout(model) == 0


def test_memory_estimate_matches_hand_computed_numbers():
    shape = Shape(params=1000, layers=2, hidden=8, heads=2, kv_heads=1, head_dim=4, intermediate=16, vocab=10)
    full = estimate(shape, "bf16", trainable=1000, lora=False, optimizer="adamw", rows=3, seq_len=5,
                    gradient_checkpointing=False, kv_rows=4, kv_len=6)
    # weights 1000 x 2 B; grads the same; AdamW 2 x 4 B each; activations per token and layer
    # 5*8 + 2*8 + 2*4 + 3*16 = 112 values x 2 layers x 15 tokens x 2 B, logits 15 x 4 x 10 x 4 B;
    # KV 2 x 2 layers x 4 x 4 rows x 6 x 2 B; fused q|k|v + gate|up 2 x 8 x (8 + 8 + 32) x 2 B
    assert full == Estimate(weights=2000, grads=2000, optimizer=8000, activations=6720 + 2400, kv_cache=768,
                            engine_weights=1536)
    assert full.learner == 2000 + 2000 + 8000 + 9120 and full.total == full.learner + 768 + 1536
    lora = estimate(shape, "bf16", trainable=100, lora=True, optimizer="adamw", rows=3, seq_len=5,
                    gradient_checkpointing=True, kv_rows=0, kv_len=6, adapted_out=20)
    # adapters in float32; a layer's set grows by 2 x 20 (peft's LoRA tensors) to 152; checkpointing keeps each
    # layer's input (2 x 8) plus two layers' sets (2 x 152): 320 values x 15 tokens x 2 B
    assert lora == Estimate(weights=2000 + 400, grads=400, optimizer=800, activations=15 * 320 * 2 + 2400,
                            kv_cache=0, engine_weights=0)
    assert "learner" in full.line() and "KV cache" in full.line()


def test_out_of_memory_is_recognised_and_advice_names_settings():
    from slowthink.rl.grpo import GRPOConfig

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 GB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    cfg = GRPOConfig.__new__(GRPOConfig)  # the advice reads fields only
    cfg.__dict__.update(micro_batch_size=0, group_size=8, prompts_per_step=16, max_new_tokens=160, lora_r=0,
                        gradient_checkpointing=False, dtype="float32", device="cpu")
    advice = out_of_memory_advice(cfg)
    for name in ("micro_batch_size", "group_size=8", "prompts_per_step=16", "max_new_tokens=160", "lora_r",
                 "gradient_checkpointing"):
        assert name in advice


def test_gradient_checkpointing_gives_the_same_lora_gradients(qwen3_dir):
    from slowthink.rl.grpo import GRPOConfig
    from slowthink.train.lora import prepare, unwrap

    grads = []
    for checkpointing in (False, True):
        model, tok = load_model(qwen3_dir)
        cfg = build(GRPOConfig, dict(init=qwen3_dir, lora_r=4, gradient_checkpointing=checkpointing))
        model = prepare(model, cfg, rl=True).train()
        inner = unwrap(model)
        assert getattr(inner, "is_activation_checkpointing", None) is checkpointing
        with torch.no_grad():  # move lora_B off zero (same seed, same values): every adapter gets a gradient
            for name, p in sorted(model.named_parameters()):
                if "lora_B" in name:
                    p.copy_(torch.linspace(-0.1, 0.1, p.numel()).view_as(p))
        ids = torch.tensor([render_prompt(tok, Q, Mode.SYSTEM2)])
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and all(n for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)
