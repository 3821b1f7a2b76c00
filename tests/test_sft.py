"""SFT: parameters change and loss falls; a SIGKILLed run resumes and ends where an uninterrupted one does."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from slowthink.config import ConfigError, build
from slowthink.models import build_model
from slowthink.train.optimizers import make_optimizer, orthogonalize
from slowthink.train.sft import SFTConfig, lr_at, train
from slowthink.train.runlog import read_metrics
from slowthink.tasks import MODES, Arithmetic
from eval_helpers import greedy_accuracy
from kill_helpers import kill_after_first_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(eval_per_level=4, max_new_tokens=48, progress=False, log_every=1, threads=1)


def test_sft_changes_parameters_and_lowers_loss(tmp_path, tok):
    model = build_model("tiny", tok, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = SFTConfig(out=str(tmp_path / "run"), levels=[1], steps=40, batch_size=16, lr=3e-3, warmup_steps=5,
                    eval_every=0, checkpoint_every=20, snapshot_every=20, **FAST)
    task = Arithmetic(op="mul", max_level=2)
    run = train(cfg, task=task, model=model, tok=tok)
    # snapshots: the model of steps 20 and 40; the last one is the final model
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["step_20", "step_40"]
    snap = lambda step: load_file(str(next((run / "snapshots" / step).glob("*.safetensors"))))  # noqa: E731
    final, mid = _weights(run), snap("step_20")
    assert all(torch.equal(final[k], v) for k, v in snap("step_40").items())
    assert any(not torch.equal(final[k], v) for k, v in mid.items())
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)
    losses = [r["loss"] for r in read_metrics(run) if "loss" in r]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    # the one held-out evaluation (eval_every=0: at the end) is of the saved model, in each mode
    (evaluation,) = [r for r in read_metrics(run) if "eval/system2_pass@1" in r]
    heldout = task.heldout_set(FAST["eval_per_level"], (1,))
    assert evaluation["step"] == 40 and [evaluation[f"eval/{m}_pass@1"] for m in MODES] == [
        greedy_accuracy(run / "model", task, heldout, m, FAST["max_new_tokens"]) for m in MODES]
    assert (run / "model" / "config.json").exists() and (run / "ckpt" / "state.pt").exists()
    assert list((run / "tb").iterdir()), "TensorBoard events written"


def _sft_cmd(out: Path, optimizer: str = "adamw") -> list[str]:
    return [sys.executable, "-m", "slowthink.cli", "train", "sft", "--out", str(out), "--model", "tiny",
            "--optimizer", optimizer,
            "--levels", "1,2", "--steps", "60", "--batch-size", "8", "--checkpoint-every", "10",
            "--eval-every", "0", "--eval-per-level", "2", "--max-new-tokens", "8", "--threads", "1",
            "--progress", "false", "--log-every", "5", "--warmup-steps", "5"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next((run / "model").glob("*.safetensors"))))


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, optimizer):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_sft_cmd(straight, optimizer), check=True, env=env, capture_output=True, timeout=300)

    step_at_kill = kill_after_first_checkpoint(_sft_cmd(killed, optimizer), killed, env, timeout_s=120)
    assert step_at_kill < 60 and not (killed / "model").exists()

    subprocess.run(_sft_cmd(killed, optimizer), check=True, env=env, capture_output=True, text=True, timeout=300)
    a, b = _weights(straight), _weights(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [r["step"] for r in read_metrics(killed) if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 60, "resumed log has no duplicate or missing rows"
    # Resuming with the other optimizer is refused, naming the field, before anything is overwritten.
    other = "muon" if optimizer == "adamw" else "adamw"
    cmd = [a if a != optimizer else other for a in _sft_cmd(killed, optimizer)] + ["--steps", "70"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "optimizer" in r.stderr and "Traceback" not in r.stderr, r.stderr[-500:]
    assert torch.equal(_weights(killed)[next(iter(b))], b[next(iter(b))])


def test_orthogonalize_gives_the_polar_factor_roughly():
    torch.manual_seed(0)
    for shape in [(48, 16), (16, 48), (24, 24)]:
        g = torch.randn(shape) @ torch.diag(torch.logspace(-1, 0.5, shape[1]))  # condition number ~30
        o = orthogonalize(g)
        assert o.shape == g.shape
        s = torch.linalg.svdvals(o)
        # the quintic iteration trades exactness for speed: singular values in ~[0.7, 1.2], not at 1
        assert 0.6 < float(s.min()) and float(s.max()) < 1.25, s
        u, _, vh = torch.linalg.svd(g, full_matrices=False)
        assert float((o * (u @ vh)).sum() / (u @ vh).norm() ** 2) > 0.8  # close to U V^T, not just any matrix


def test_muon_step_matches_torch_muon_and_adamw_takes_the_embedding(tok):
    """Our Muon (fp32 Newton-Schulz) takes torch's ``Muon(adjust_lr_fn="match_rms_adamw")`` step up to torch's
    bf16 rounding; the embedding table and the norms go to AdamW."""
    model = build_model("tiny", tok, seed=0)
    opt = make_optimizer(model, SFTConfig(optimizer="muon", lr=1e-2, weight_decay=0.1))
    emb = model.get_input_embeddings().weight
    muon_params = [p for g in opt.muon.param_groups for p in g["params"]]
    adamw_params = [p for g in opt.adamw.param_groups for p in g["params"]]
    assert all(p.ndim == 2 for p in muon_params) and not any(p is emb for p in muon_params)
    assert any(p is emb for p in adamw_params)
    assert len(muon_params) + len(adamw_params) == len(list(model.parameters()))
    w = muon_params[0]
    ref = torch.nn.Parameter(w.detach().clone())
    torch_muon = torch.optim.Muon([ref], lr=1e-2, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    for step in range(3):
        g = torch.randn_like(w)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        w.grad, ref.grad = g.clone(), g.clone()
        start = w.detach().clone()
        opt.step()
        torch_muon.step()
        ours, theirs = w.detach() - start, ref.detach() - start
        assert ours.norm() > 0
        assert float((ours - theirs).norm() / theirs.norm()) < 0.05, step
    state = opt.state_dict()
    assert set(state) == {"muon", "adamw"}
    with pytest.raises(ValueError, match="not a Muon"):
        opt.load_state_dict({"state": {}, "param_groups": []})


def test_lr_schedule_warmup_then_cosine():
    cfg = SFTConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.55)
    assert lr_at(100, cfg) == pytest.approx(0.1)


def test_config_yaml_overrides_and_errors(tmp_path):
    from slowthink.config import load_config

    y = tmp_path / "c.yaml"
    y.write_text("steps: 7\nlevels: [2, 3]\ntask_args: {op: add}\n")
    cfg = load_config(SFTConfig, y, {"lr": "1e-3", "levels": "1,4"})
    assert (cfg.steps, cfg.levels, cfg.lr, cfg.task_args) == (7, [1, 4], 1e-3, {"op": "add"})
    with pytest.raises(ConfigError, match="steps"):
        build(SFTConfig, {"steps": 0})
    with pytest.raises(ConfigError, match="expected int"):
        build(SFTConfig, {"steps": "many"})
    with pytest.raises(ConfigError, match="unknown config field"):
        build(SFTConfig, {"stepz": 3})
    with pytest.raises(ConfigError, match="system2_fraction"):
        build(SFTConfig, {"system2_fraction": 1.5})
    with pytest.raises(ConfigError, match="optimizer"):
        build(SFTConfig, {"optimizer": "lion"})
    with pytest.raises(ConfigError, match="'device': 'gpu:0' is not a torch device"):
        build(SFTConfig, {"device": "gpu:0"})
    if not torch.cuda.is_available():  # asked-for hardware that is not there: refused before any work starts
        with pytest.raises(ConfigError, match="no CUDA device is visible"):
            build(SFTConfig, {"device": "cuda"})
    y.write_text("steps: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(SFTConfig, y)


def test_cli_reports_bad_config_clearly(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "slowthink.cli", "train", "sft", "--steps", "-3",
                        "--out", str(tmp_path / "x")], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "steps" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "slowthink.cli", "train", "sft", "--task", "nope.py:X",
                        "--out", str(tmp_path / "y"), "--steps", "1"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "nope.py" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "slowthink.cli", "eval", "--model", str(tmp_path), "--device", "tpu:9"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not a torch device" in r.stderr and "Traceback" not in r.stderr


def test_any_hf_causal_lm_by_path_trains_and_evaluates(tmp_path, tok):
    """A non-Llama model folder (GPT-2 built from a config) goes through the same SFT and eval code
    (the engine's generic path)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from slowthink.models import save

    cfg = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=2, n_positions=256,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    save(GPT2LMHeadModel(cfg), tok, tmp_path / "gpt2")
    run = train(SFTConfig(out=str(tmp_path / "run"), model=str(tmp_path / "gpt2"), levels=[1], steps=15,
                          batch_size=8, lr=3e-3, warmup_steps=2, eval_every=0, checkpoint_every=15, **FAST))
    losses = [r["loss"] for r in read_metrics(run) if "loss" in r]
    assert losses[-1] < losses[0]
    assert any("eval/system2_pass@1" in r for r in read_metrics(run))
    from transformers import AutoModelForCausalLM

    assert type(AutoModelForCausalLM.from_pretrained(run / "model")).__name__ == "GPT2LMHeadModel"


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_no_bad_checkpoint(tmp_path, tok):
    from slowthink.train.loop import TrainingHalted

    model = build_model("tiny", tok, seed=0)
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    cfg = SFTConfig(out=str(tmp_path / "run"), levels=[1], steps=5, batch_size=4, eval_every=0,
                    checkpoint_every=1, **FAST)
    with pytest.raises(TrainingHalted, match="non-finite loss.*step 1"):
        train(cfg, task=Arithmetic(max_level=1), model=model, tok=tok)
    assert not (tmp_path / "run" / "ckpt").exists() and not (tmp_path / "run" / "model").exists()


def test_every_command_and_trainer_help_renders():
    """argparse %-formats help text: one stray '%' in a config field's help broke `train star --help`."""
    import argparse

    from slowthink.cli import build_parser

    def walk(parser, name):
        text = parser.format_help()
        assert "usage:" in text, name
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from walk(sub, f"{name} {sub_name}")
        yield name

    names = list(walk(build_parser(), "slowthink"))
    assert {"slowthink train star", "slowthink train grpo", "slowthink quickstart", "slowthink serve"} <= set(names)
