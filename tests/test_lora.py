"""LoRA (peft) on a Qwen3-architecture model with a byte-level BPE tokenizer: the engine samples the adapted weights,
only adapters train, checkpoints load in plain peft, the merged model gives the same outputs, GRPO stays on-policy
with adapters (and its KL reference is the base), and a SIGKILLed LoRA run resumes where an uninterrupted one ends."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_fixture import DigitShare, qwen3_dir  # noqa: F401 (session fixture)
from kill_helpers import kill_after_first_checkpoint
from slowthink.chat import Mode
from slowthink.config import ConfigError, build
from slowthink.engine import Engine, SamplingParams
from slowthink.models import load_model
from slowthink.tasks import Arithmetic
from slowthink.tokenizer import render_prompt
from slowthink.train.lora import is_lora, prepare
from slowthink.train.runlog import read_metrics

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
Q = [{"role": "user", "content": "What is 12+34?"}]


def _prompts(tok, n=2):
    qs = ["What is 12+34?", "Compute 7*8 please."][:n]
    return [render_prompt(tok, [{"role": "user", "content": q}], Mode.SYSTEM2) for q in qs]


def _hf_greedy(model, prompt, n):
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([prompt]),
                             attention_mask=torch.ones(1, len(prompt), dtype=torch.long), max_new_tokens=n,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def _engine_greedy(engine, prompts, n):
    reqs = engine.generate(prompts, 1, SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))
    return [completions[0].token_ids for completions in reqs]


def _lora_cfg(cls, folder, out, **kw):
    return build(cls, {**dict(init=folder, out=str(out), lora_r=4, progress=False, threads=1), **kw})


@pytest.mark.parametrize("targets", [[], ["q_proj", "v_proj"]])
def test_engine_samples_the_adapted_weights_after_each_update(qwen3_dir, targets):
    from slowthink.rl.grpo import GRPOConfig

    model, tok = load_model(qwen3_dir)
    peft_model = prepare(model, _lora_cfg(GRPOConfig, qwen3_dir, "unused", lora_targets=targets), rl=True)
    assert is_lora(peft_model)
    engine = Engine(peft_model, tok)
    assert engine.native, "Qwen3 runs on the native decode path, adapters included"
    prompts = _prompts(tok)
    before = _engine_greedy(engine, prompts, 12)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(3):  # move the adapters (lora_B starts at 0: the first output is the base's)
        peft_model(input_ids=torch.tensor([prompts[0]]), labels=torch.tensor([prompts[0]])).loss.backward()
        opt.step()
        opt.zero_grad()
    after = _engine_greedy(engine, prompts, 12)  # same engine: it notices the adapter update itself
    assert after != before, "the update changed the greedy output (else the comparison below proves nothing)"
    assert after == [_hf_greedy(peft_model, p, 12) for p in prompts]
    signature = engine.backend._signature
    engine.backend.sync()  # nothing changed since: no re-fusing (unadapted weights are not written to)
    assert engine.backend._signature is signature


def test_grpo_with_lora_stays_on_policy_and_trains_adapters_only(qwen3_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from slowthink.rl.grpo import GRPOConfig, train

    cfg = _lora_cfg(GRPOConfig, qwen3_dir, tmp_path / "grpo", levels=[1], mode="system1", steps=3, prompts_per_step=2,
                    group_size=4, max_new_tokens=8, lr=2e-2, kl_coef=0.05, eval_every=0, eval_per_level=0,
                    checkpoint_every=3)
    run = train(cfg, task=DigitShare(op="add", max_level=2))
    rows = [r for r in read_metrics(run) if "approx_kl" in r]
    assert len(rows) == 3
    for r in rows:  # the engine sampled the adapted weights: learner and sampler agree at every step
        assert abs(r["approx_kl"]) < 1e-6 and r["clip_frac"] == 0, r
    assert rows[0]["kl_ref"] < 1e-9, "step 1: adapters start at zero, the reference (adapters off) is the policy"
    assert rows[-1]["kl_ref"] > 1e-6, "later the adapters moved and the reference stayed the base"
    base = AutoModelForCausalLM.from_pretrained(qwen3_dir)
    base_w = {k: v.clone() for k, v in base.state_dict().items()}
    # the checkpoint is an adapter that plain peft loads; the final model/ is the merge, adapter/ the adapter
    assert (run / "ckpt" / "adapter_config.json").is_file() and not list((run / "ckpt").glob("model*.safetensors"))
    adapted = PeftModel.from_pretrained(base, run / "adapter")
    merged = AutoModelForCausalLM.from_pretrained(run / "model")
    prompt = _prompts(load_model(qwen3_dir)[1], 1)[0]
    assert _hf_greedy(adapted, prompt, 10) == _hf_greedy(merged, prompt, 10)
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, base_w[k])]
    assert changed and all(k.endswith(("_proj.weight",)) for k in changed), changed  # only adapted projections
    assert json.loads((run / "model" / "task.json").read_text())["task"] == "arithmetic"


def test_sft_with_lora_changes_only_adapters_and_merges(qwen3_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from slowthink.train.sft import SFTConfig, train

    model, tok = load_model(qwen3_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = build(SFTConfig, dict(model=qwen3_dir, out=str(tmp_path / "sft"), lora_r=4, lora_targets=["q_proj", "v_proj",
                "down_proj"], levels=[1], steps=3, batch_size=8, lr=1e-2, optimizer="adamw", warmup_steps=0,
                eval_every=0, eval_per_level=0, checkpoint_every=3, progress=False, threads=1, log_every=1))
    run = train(cfg, task=Arithmetic(op="add", max_level=2), model=model, tok=tok)
    # peft injected the adapters into `model` in place: its base weights are those it was loaded with
    lora_b = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values()), "every adapter trained"
    for k, v in model.state_dict().items():
        if "lora_" not in k:
            assert torch.equal(v, before[k.replace(".base_layer", "")]), k
    targets = {k.split(".")[-4] for k in lora_b}  # ...q_proj.lora_B.default.weight
    assert targets == {"q_proj", "v_proj", "down_proj"}
    base = AutoModelForCausalLM.from_pretrained(qwen3_dir)
    from_ckpt = PeftModel.from_pretrained(base, run / "ckpt")  # the checkpoint in plain peft
    merged = AutoModelForCausalLM.from_pretrained(run / "model")
    for prompt in _prompts(tok):
        assert _hf_greedy(from_ckpt, prompt, 10) == _hf_greedy(merged, prompt, 10) == _hf_greedy(model, prompt, 10)
    assert (run / "adapter" / "adapter_model.safetensors").is_file()


def test_lora_config_errors_name_the_field(qwen3_dir, tmp_path):
    from slowthink.rl.grpo import GRPOConfig, train

    with pytest.raises(ConfigError, match="lora_targets"):
        build(GRPOConfig, dict(init=qwen3_dir, lora_targets=["q_proj"]))  # targets without a rank
    with pytest.raises(ConfigError, match="dtype"):
        build(GRPOConfig, dict(init=qwen3_dir, dtype="bf16"))  # bf16 is for a GPU
    cfg = _lora_cfg(GRPOConfig, qwen3_dir, tmp_path / "bad", lora_targets=["nonexistent_proj"], steps=1)
    with pytest.raises(ConfigError, match="lora_targets"):
        train(cfg, task=DigitShare(op="add", max_level=2))


STEPS = 8


def _sft_cmd(folder: str, out: Path, steps: int = STEPS, lora: bool = True) -> list[str]:
    return [sys.executable, "-m", "slowthink.cli", "train", "sft", "--model", folder, "--out", str(out),
            *(["--lora-r", "4"] if lora else []), "--optimizer", "adamw", "--lr", "1e-2", "--levels", "1",
            "--steps", str(steps), "--batch-size", "4", "--checkpoint-every", "2", "--eval-every", "0",
            "--eval-per-level", "0", "--threads", "1", "--progress", "false", "--log-every", "1", "--warmup-steps", "2"]


def test_lora_resume_after_sigkill_matches_uninterrupted_run_and_merge_cli(qwen3_dir, tmp_path, capsys):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    from slowthink.cli import main

    assert main(_sft_cmd(qwen3_dir, straight)[3:]) == 0  # in-process: the same CLI entry, one start-up less
    step_at_kill = kill_after_first_checkpoint(_sft_cmd(qwen3_dir, killed), killed, env, timeout_s=200)
    assert step_at_kill < STEPS and not (killed / "model").exists()
    r = subprocess.run(_sft_cmd(qwen3_dir, killed), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "memory estimate" in r.stderr
    a = load_file(str(straight / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(killed / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # resuming the LoRA checkpoint without LoRA is refused, naming the field
    assert main(_sft_cmd(qwen3_dir, killed, steps=STEPS + 2, lora=False)[3:]) == 2
    assert "lora_r" in capsys.readouterr().err
    # slowthink merge: the checkpoint's adapter merged into its base equals the run's own merged model
    merged = tmp_path / "merged"
    assert main(["merge", "--adapter", str(killed / "ckpt"), "--base", qwen3_dir, "--out", str(merged)]) == 0
    mine = load_file(str(next(merged.glob("*.safetensors"))))
    theirs = load_file(str(next((killed / "model").glob("*.safetensors"))))
    assert mine.keys() == theirs.keys() and all(torch.allclose(mine[k], theirs[k], atol=1e-6) for k in mine)


@pytest.fixture(scope="module")
def answering_dir(qwen3_dir, tmp_path_factory) -> str:
    """The Qwen3-style model after a short LoRA SFT on 1-digit additions (System-1): it ends its answers (~65% well
    formed, ~8% right at temperature 1), so every trainer finds correct and incorrect samples. Its model/ is the
    merged plain folder."""
    from slowthink.train.sft import SFTConfig, train

    cfg = build(SFTConfig, dict(model=qwen3_dir, out=str(tmp_path_factory.mktemp("sftbase")), lora_r=8, levels=[1],
                                steps=60, batch_size=16, lr=1e-2, optimizer="adamw", warmup_steps=0,
                                system2_fraction=0.0, eval_every=0, eval_per_level=0, checkpoint_every=1000,
                                progress=False, threads=1))
    return str(train(cfg, task=Arithmetic(op="add", max_level=2)) / "model")


TRAINERS = {
    "rloo": dict(steps=1, prompts_per_step=4, group_size=8, eval_every=0),
    "ppo": dict(steps=1, prompts_per_step=4, group_size=4, eval_every=0, kl_coef=0.05),
    "star": dict(iterations=1, problems_per_iteration=16, samples_per_problem=8, batch_size=4, steps_per_iteration=2,
                 rationalize=False),
    "dpo": dict(num_problems=16, samples_per_problem=8, pairs_per_problem=1, batch_size=4, steps=2, eval_every=0),
    "revise": dict(iterations=1, problems_per_iteration=4, drafts_per_problem=1, batch_size=4, steps_per_iteration=2),
}


@pytest.mark.parametrize("algo", sorted(TRAINERS))
def test_every_trainer_trains_lora_adapters(answering_dir, tmp_path, algo):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from slowthink.cli_parser import trainers

    cfg_cls, train = trainers()[algo]
    mode = {} if algo == "revise" else {"mode": "system1"}
    cfg = build(cfg_cls, dict(init=answering_dir, out=str(tmp_path / algo), lora_r=4, lr=1e-2, levels=[1],
                              max_new_tokens=6, eval_per_level=0, progress=False, threads=1, **mode,
                              **TRAINERS[algo]))
    run = train(cfg, task=Arithmetic(op="add", max_level=2))
    assert (run / "ckpt" / "adapter_config.json").is_file() and not list((run / "ckpt").glob("model*.safetensors"))
    adapter = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k), "the adapters trained"
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(answering_dir), run / "adapter")
    merged = AutoModelForCausalLM.from_pretrained(run / "model")
    prompt = _prompts(load_model(answering_dir)[1], 1)[0]
    assert _hf_greedy(adapted, prompt, 8) == _hf_greedy(merged, prompt, 8)


def test_async_grpo_with_lora_and_kl(answering_dir, tmp_path):
    """The sampler's thread takes learner micro-batches while the learner computes the KL reference: the reference
    must not switch the shared adapters off (peft's disable_adapter would, for both threads)."""
    from slowthink.rl.grpo import GRPOConfig, train

    cfg = _lora_cfg(GRPOConfig, answering_dir, tmp_path / "async", levels=[1], mode="system1", steps=3,
                    prompts_per_step=2, group_size=4, max_new_tokens=6, lr=1e-2, kl_coef=0.05, eval_every=0,
                    eval_per_level=0, async_rollout=True, sampler_share=0.5, threads=2)
    run = train(cfg, task=Arithmetic(op="add", max_level=2))
    rows = [r for r in read_metrics(run) if "approx_kl" in r]
    assert [r["policy_lag"] for r in rows] == [0, 1, 1]
    assert rows[0]["approx_kl"] < 1e-6 and rows[0]["kl_ref"] < 1e-9  # step 1: on-policy, adapters still zero
