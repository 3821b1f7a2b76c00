"""The tool-use examples of ``benchmarks/tool_rl.py`` are what the environment produces: the call the model is
taught is read by ``ToolEnv`` as a call to the calculator, the response it is shown is the one the environment
appends, and only the model's own tokens are in the loss."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from slowthink.chat import Mode
from slowthink.env import Limits, ToolEnv
from slowthink.rl.rewards import RewardFn
from slowthink.tasks import get_task
from slowthink.tokenizer import build_char_tokenizer
from slowthink.tools import ToolSet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import tool_rl  # noqa: E402

TASK = get_task("arithmetic", op="mul", cot="chain", max_level=6, restate=True)


@pytest.mark.parametrize("call_format,restated", [("bare", True), ("plain", False), ("json", False)])
def test_examples_match_the_environment(call_format, restated):
    problem = TASK.parse_question("670235*215837")
    call, observation, final = tool_rl.tool_episode_text(problem.question, problem.answer, call_format, restated)
    assert call.startswith("670235*215837\n<tool_call>") == restated
    env = ToolEnv(TASK, ToolSet(["calculator"]), Limits(2, 3, 0), Mode.SYSTEM2, RewardFn(), tools_prompt="none")
    env.reset(problem)
    step = env.step(call, num_tokens=len(call))
    assert not step.done and step.observation == observation  # the response the example shows is the real one
    done = env.step(final, num_tokens=len(final))
    assert done.done and done.reward == 1.0


def test_tool_response_is_out_of_the_loss():
    tok = build_char_tokenizer(tool_tokens=True)
    problem = TASK.parse_question("12*34")
    r = tool_rl.render_tool_example(tok, TASK, problem, "bare", restated=True)
    learned = tok.decode([i for i, m in zip(r.ids, r.mask) if m])
    assert learned == "12*34\n<tool_call>12*34</tool_call></think>\n\n408<|im_end|>"
    assert "408" in tok.decode(r.ids[r.prompt_len:])  # the response is in the sequence, only not learned


def test_markup_tokens_are_added_to_a_base_without_them():
    from slowthink.models import build_model
    from slowthink.tokenizer import add_tool_tokens

    tok = build_char_tokenizer()
    model = build_model("tiny", tok)
    assert add_tool_tokens(model, tok) == 4
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert len(tok("<tool_response>", add_special_tokens=False)["input_ids"]) == 1
    assert add_tool_tokens(model, tok) == 0  # already there


def test_copy_stats_read_the_two_copies():
    problems = [TASK.parse_question("12*34"), TASK.parse_question("56*78")]
    texts = ["12*34\n12*4=48\n360+48=408\n</think>\n\n408",   # restated, answer copied (wrong or right alike)
             "56*79\n56*8=448\n</think>\n\n4480"]              # miscopied question, answer not the last number
    assert tool_rl.copy_stats(problems, texts) == {"restated_question_exactly": 0.5, "finished": 1.0,
                                                   "answer_is_last_number": 0.5}
    assert tool_rl.copy_stats(problems[:1], ["12*34\n12*4=4"])["answer_is_last_number"] is None
