"""RL through tools: GRPO steps on episodes that call the real calculator move the policy toward the rewarded
tool use (tool responses masked); ``slowthink train grpo|star --tools calculator`` run end to end and log the tool
metrics; STaR keeps a tool trace's token ids and trains with its tool responses masked."""

import json
import re

import pytest
import torch

from slowthink.chat import Mode
from slowthink.config import ConfigError, load_config
from slowthink.env import Limits
from slowthink.models import load_model
from slowthink.rl import grpo, star
from slowthink.rl.batch import collate_rows, learner_logprobs, make_rows
from slowthink.rl.grpo import GRPOConfig
from slowthink.rl.rewards import RewardFn
from slowthink.rl.rollout import LocalRolloutWorker
from slowthink.tasks import Arithmetic
from slowthink.tools import ToolSet
from slowthink.train.runlog import read_metrics
from env_helpers import FakeEngine, Scripted, call

pytestmark = pytest.mark.usefixtures("one_thread")

TASK = Arithmetic(op="add", max_level=2)
RESPONSE = re.compile(r"<tool_response>\n(.*?)\n</tool_response>", re.S)


def tool_user(problems):
    """Even samples ask the calculator and answer with its result; odd samples answer 0 without a tool."""
    def reply(prompt, j):
        if j % 2:
            return "0"
        if (m := RESPONSE.search(prompt)) is not None:
            return m.group(1)
        p = next(p for p in problems if p.question in prompt)
        return call("calculator", json.dumps({"expression": f"{p.data['a']}+{p.data['b']}"}))
    return reply


def scripted_worker(model, tok, problems):
    worker = LocalRolloutWorker(model, tok, TASK, RewardFn(), tools=ToolSet(["calculator"]),
                                limits=Limits(max_tool_calls=2, max_turns=3), tools_prompt="none")
    worker.engine = FakeEngine(Scripted(tok, tool_user(problems)))
    worker.load_weights(None, version=0)
    return worker


def model_logp(model, rows, temperature):
    with torch.no_grad():
        logp = learner_logprobs(model, collate_rows(rows, 0, "cpu"), temperature)
    return [[float(logp[i, t]) if (r.mask is None or r.mask[t]) else 0.0 for t in range(len(r.token_ids))]
            for i, r in enumerate(rows)]


def test_grpo_steps_through_the_calculator_move_the_policy(sft_model):
    model, tok = load_model(sft_model)
    problems = [TASK.parse_question(q) for q in ("3+4", "12+5", "21+8")]
    groups = scripted_worker(model, tok, problems).rollout(problems, Mode.SYSTEM1, 4, _sampling())
    eps = [e for g in groups for e in g.episodes]
    assert [len(e.tool_calls) for e in eps] == [1, 0, 1, 0] * 3
    assert all(e.score.correct == (i % 2 == 0) for i, e in enumerate(eps))
    assert all(c.response == g.problem.answer for g in groups for e in g.episodes for c in e.tool_calls)
    cfg = GRPOConfig(init=sft_model, max_new_tokens=200, temperature=1.0, lr=3e-3)
    rows = make_rows(groups, cfg.advantages(torch.tensor([g.totals for g in groups])), False)
    assert all(r.mask is not None and 0 in r.mask for r in rows[::2]) and all(r.mask is None for r in rows[1::2])
    for r, lp in zip(rows, model_logp(model, rows, cfg.temperature)):
        r.old_logprobs = lp  # on-policy: the learner's own log-probs, as the engine's would be

    def model_token_logp():
        return [sum(lp) for lp in model_logp(model, rows, cfg.temperature)]

    before = model_token_logp()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        stats = grpo.learner_update(model, None, rows, cfg, tok.pad_token_id)
        opt.step()
    after = model_token_logp()
    assert stats["learner_rows"] == 12
    assert all(a > b for a, b in zip(after[::2], before[::2])), "the tool-using, correct episodes got likelier"
    assert all(a < b for a, b in zip(after[1::2], before[1::2])), "the wrong direct answers got less likely"


def _sampling():
    from slowthink.engine import SamplingParams

    return SamplingParams(max_tokens=200, temperature=1.0, seed=1)


def _run_config(cls, tmp_path, sft_model, **kw):
    common = dict(out=str(tmp_path / cls.__name__), init=sft_model, levels=[1], mode="system1", max_new_tokens=8,
                  eval_per_level=2, threads=1, progress=False, tools="calculator", tools_prompt="none",
                  max_tool_calls=2, max_turns=3)
    return cls(**{**common, **kw})


@pytest.mark.parametrize("trainer", ["grpo", "ppo"])
def test_rl_trains_with_tools_end_to_end(tmp_path, sft_model, trainer):
    """The real engine and tiny model, the CLI's config fields: rollouts and held-out evaluation run as tool
    episodes, the step logs the tool metrics, the weights move."""
    from slowthink.rl import ppo

    module = {"grpo": grpo, "ppo": ppo}[trainer]
    cfg = _run_config(module.GRPOConfig if trainer == "grpo" else module.PPOConfig, tmp_path, sft_model, steps=1,
                      prompts_per_step=2, group_size=4, eval_every=1, checkpoint_every=1, lr=1e-3)
    run = module.train(cfg, task=TASK)
    rows = read_metrics(run)
    step = next(r for r in rows if "reward_mean" in r)
    for key in ("tool_calls_per_episode", "tool_errors_per_episode", "turns_per_episode", "correct_used_tool",
                "limit_ended", "tool_tokens_per_episode"):
        assert key in step, key
    assert step["turns_per_episode"] >= 1 and any("eval/system1_pass@1" in r for r in rows)
    init, _ = load_model(sft_model)
    trained, _ = load_model(str(run / "model"))
    assert any(not torch.equal(a, b) for a, b in zip(init.state_dict().values(), trained.state_dict().values()))


def test_tools_config_fields(sft_model):
    cfg = load_config(GRPOConfig, None, {"init": sft_model, "tools": "calculator", "max_tool_calls": "3"})
    assert (cfg.tools, cfg.max_tool_calls, cfg.max_turns) == ("calculator", 3, 8)
    with pytest.raises(ConfigError, match="'tools'.*calculatr"):
        GRPOConfig(init=sft_model, tools="calculatr")
    with pytest.raises(ConfigError, match="max_tool_calls"):
        GRPOConfig(init=sft_model, max_tool_calls=0)
    with pytest.raises(ConfigError, match="tools_file"):
        GRPOConfig(init=sft_model, tools_file="no/such/file.py")
    with pytest.raises(ConfigError, match="tools_prompt"):
        star.STaRConfig(init=sft_model, tools_prompt="short")
    # the worker options are plain data (they cross to Ray rollout actors) and build the tool set in the worker
    import pickle

    from slowthink.env import tool_options

    opts = pickle.loads(pickle.dumps(tool_options(cfg)))
    assert opts["limits"] == Limits(3, 8, 0) and tool_options(GRPOConfig(init=sft_model)) == {}
    model, tok = load_model(sft_model)
    worker = LocalRolloutWorker(model, tok, TASK, RewardFn(), **opts)
    assert isinstance(worker.tools, ToolSet) and worker.tools.names == ["calculator"]


def test_star_keeps_tool_traces_as_tokens(tok):
    """A verified tool episode becomes a trace with its sampled ids and the mask; the rendered example puts the
    environment's prompt first and leaves the tool response out of the loss."""
    from slowthink.models import build_model

    problems = [TASK.parse_question("3+4")]

    model = build_model("tiny", tok)
    groups = scripted_worker(model, tok, problems).rollout(problems, Mode.SYSTEM1, 2, _sampling())
    traces = star.verified_traces(groups, "direct", 0, max_per_problem=4)
    assert len(traces) == 1 and traces[0].completion_ids == groups[0].episodes[0].token_ids
    trace = star.Trace.from_dict(json.loads(json.dumps(traces[0].to_dict())))
    assert trace == traces[0]
    messages = lambda p: [{"role": "system", "content": "tools!"}, *TASK.prompt(p, Mode.SYSTEM1)]  # noqa: E731
    r = star.render_trace(tok, TASK, trace, Mode.SYSTEM1, messages)
    assert r.ids[r.prompt_len:] == trace.completion_ids and "tools!" in tok.decode(r.ids[:r.prompt_len])
    learned = tok.decode([t for t, m in zip(r.ids, r.mask) if m])
    assert "<tool_call>" in learned and "<tool_response>" not in learned and learned.endswith("7<|im_end|>")
    # a one-turn trace is stored and rendered as before
    plain = star.Trace(problems[0], "7", "direct", 0)
    assert set(plain.to_dict()) == {"problem", "completion", "source", "iteration"}
    assert star.render_trace(tok, TASK, plain, Mode.SYSTEM1) == star.render_example(
        tok, TASK.prompt(problems[0], Mode.SYSTEM1), Mode.SYSTEM1, "7")


def test_star_through_tools_end_to_end(tmp_path, sft_model, monkeypatch):
    """STaR's loop with tools: the scripted policy's verified tool traces are kept as tokens and fine-tuned on."""
    import slowthink.rl.rollout as rollout

    problems_seen = []

    def fake_engine(model, tok, max_batch=256):
        policy = Scripted(tok, lambda prompt, j: tool_user(problems_seen)(prompt, j))
        return FakeEngine(policy)

    real_iteration_problems = star.iteration_problems

    def iteration_problems(*a, **kw):
        out = real_iteration_problems(*a, **kw)
        problems_seen.extend(out)
        return out

    monkeypatch.setattr(rollout, "Engine", fake_engine)
    monkeypatch.setattr(star, "iteration_problems", iteration_problems)
    monkeypatch.setattr(star, "heldout_problems", lambda task, cfg: [])
    cfg = _run_config(star.STaRConfig, tmp_path, sft_model, iterations=1, problems_per_iteration=4,
                      samples_per_problem=2, steps_per_iteration=2, batch_size=4, rationalize=False, eval_per_level=0,
                      max_new_tokens=200)
    run = star.train(cfg, task=TASK)
    traces = [json.loads(line) for line in (run / "traces.jsonl").read_text().splitlines()]
    assert traces and all(0 in t["completion_mask"] and "<tool_call>" in t["completion"] for t in traces)
    step = next(r for r in read_metrics(run) if "solved_direct" in r)
    assert step["tool_calls_per_episode"] == 0.5 and step["correct_used_tool"] == 1.0 and step["ft_steps"] == 2


def test_eval_command_with_tools(tmp_path, sft_model):
    from slowthink.cli import main

    out = tmp_path / "eval.json"
    args = ["eval", "--model", sft_model, "--levels", "1", "--per-level", "3", "--modes", "system1",
            "--max-new-tokens", "8", "--json-out", str(out)]
    assert main(args + ["--tools", "calculator", "--tools-prompt", "none", "--max-tool-calls", "2"]) == 0
    with_tools = json.loads(out.read_text())["results"]["system1"]["overall"]
    assert with_tools["n"] == 3 and 0 <= with_tools["pass@1"] <= 1
    assert main(args + ["--tools", "calculatr"]) == 2, "an unknown tool is a clear error, not a crash"
