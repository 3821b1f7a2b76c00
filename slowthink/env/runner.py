"""The episode runner: many episodes at once over any async ``generate(prompt_ids, n, sampling)``.

Each problem's first turn is one request for its n samples (the prompt is prefilled once). A sample whose turn
stops at ``</tool_call>`` (a stop string) goes to its environment, which runs the tool (on a thread pool, so
tools of different episodes run concurrently and the event loop is never blocked); the observation's token ids
are appended and the sample goes on as a continuation request whose prompt is everything so far, while the
other rows keep decoding. Token ids are kept end to end (``Episode``): the model's ids with the sampler's
log-probs, the observations' ids as tokenised once when they were appended; the transcript is never
re-tokenised.

``generate`` has the shape of ``slowthink.effort.question.Generate``: the server passes its scheduler's, and
in-process code uses :class:`EngineDriver`, a small async driver over ``Engine.add``/``step`` that batches every
episode's pending requests into the same decode steps.

Seeds: a seeded sampling gives problem i the seed ``derive_seed(seed, i)`` (as the rollout worker always did),
and the continuation after turn t of sample j ``derive_seed(seed, i, j, t)``. Token budget: ``sampling.
max_tokens`` counts the model's tokens over all turns of an episode; ``Limits.max_tokens`` (when set) also
counts tool responses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import replace

from ..chat import TOOL_CALL_CLOSE, Mode
from ..engine import Completion, SamplingParams, derive_seed
from ..tasks.base import Problem
from ..tokenizer import render_prompt
from .base import Environment, StepResult
from .episode import Episode, Segment

Generate = Callable[[list[int], int, SamplingParams], Awaitable[list[Completion]]]


def stopped_at_call(c: Completion, decoded: str) -> bool:
    """Whether the engine ended this turn at ``</tool_call>``: its text (which leaves the stop string out) is
    followed, in the decoded tokens, by the stop string."""
    return c.finish_reason == "stop" and decoded[len(c.text):].startswith(TOOL_CALL_CLOSE)


class EpisodeRunner:
    """Runs episodes of ``make_env()`` environments (one fresh environment per episode)."""

    def __init__(self, generate: Generate, tokenizer, make_env: Callable[[], Environment],
                 pool: Executor | None = None, context: int | None = None):
        self.generate, self.tok, self.make_env, self.pool = generate, tokenizer, make_env, pool
        self.context = context  # the model's positions: an episode with tools must fit (None: not checked)

    async def run(self, problems: list[Problem], mode: Mode, n: int, sampling: SamplingParams,
                  first: int = 0) -> list[list[Episode]]:
        """n episodes per problem, in order. ``first``: the position of ``problems[0]`` in the whole batch (its
        seed is that position's), so a batch split between workers samples what one worker would."""
        return list(await asyncio.gather(*(self._problem(first + i, p, mode, n, sampling)
                                           for i, p in enumerate(problems))))

    async def _problem(self, i: int, problem: Problem, mode: Mode, n: int, sampling: SamplingParams) -> list[Episode]:
        envs = [self.make_env() for _ in range(n)]
        messages = [env.reset(problem) for env in envs][0]
        prompt = render_prompt(self.tok, messages, mode)
        if self.context and envs[0].runs_tools and len(prompt) + sampling.max_tokens > self.context:
            raise ValueError(f"an episode with tools needs {len(prompt)} prompt tokens (the tool instructions "
                             f"included) + {sampling.max_tokens} new tokens, more than the model's {self.context} "
                             "positions: use tools_prompt=none (--tools-prompt none), fewer max_new_tokens or a "
                             "model with a longer context")
        params = sampling if sampling.seed is None else replace(sampling, seed=derive_seed(sampling.seed, i))
        stops = tuple(s for s in envs[0].stop if s not in params.stop)
        if stops:
            params = replace(params, stop=params.stop + stops)
        first = await self.generate(prompt, n, params)
        return list(await asyncio.gather(*(self._episode(env, problem, mode, prompt, c, params, (i, j))
                                           for j, (env, c) in enumerate(zip(envs, first)))))

    async def _episode(self, env: Environment, problem: Problem, mode: Mode, prompt: list[int], c: Completion,
                       params: SamplingParams, where: tuple[int, int]) -> Episode:
        ep = Episode(problem, mode, prompt, with_tools=env.runs_tools)
        while True:
            ep.turns += 1
            # a turn that stopped at a call keeps the call's closing tag (the engine's text leaves stop strings out)
            decoded = self.tok.decode(c.token_ids, skip_special_tokens=False) if env.stop else c.text
            turn = decoded if env.stop and stopped_at_call(c, decoded) else c.text
            ep.segments.append(Segment(list(c.token_ids), list(c.logprobs), 1, turn, c.finish_reason))
            res = await self._step(env, turn, len(c.token_ids))
            ep.tool_calls += res.info.get("tool_calls", [])
            if res.done:
                return _finish(ep, res, c.finish_reason)
            obs = self.tok(res.observation, add_special_tokens=False)["input_ids"]
            ep.segments.append(Segment(obs, [0.0] * len(obs), 0, res.observation))
            room = self._room(env, ep, params)
            if room < 1:
                return _finish(ep, env.end("tokens"), "length")
            more = replace(params, max_tokens=room,
                           seed=None if params.seed is None else derive_seed(params.seed, *where, ep.turns))
            c = (await self.generate(prompt + ep.token_ids, 1, more))[0]

    async def _step(self, env: Environment, turn: str, num_tokens: int) -> StepResult:
        if not env.runs_tools:  # scoring only: cheap, and inline keeps one-turn rollouts free of threads
            return env.step(turn, num_tokens)
        return await asyncio.get_running_loop().run_in_executor(self.pool, env.step, turn, num_tokens)

    @staticmethod
    def _room(env: Environment, ep: Episode, params: SamplingParams) -> int:
        room = params.max_tokens - ep.model_tokens
        cap = getattr(getattr(env, "limits", None), "max_tokens", 0)
        return min(room, cap - len(ep.token_ids)) if cap else room


def _finish(ep: Episode, res: StepResult, finish_reason: str) -> Episode:
    ep.reward, ep.limit = res.info["reward"], res.info.get("limit")
    ep.finish_reason = "limit" if ep.limit in ("tool_calls", "turns") else finish_reason
    if ep.finish_reason == "length" and ep.with_tools:
        ep.limit = "tokens"  # a turn cut by the episode's token budget
    return ep


class EngineDriver:
    """Async ``generate`` over an in-process ``Engine``: requests from every episode are added to the engine and
    decoded together, one ``engine.step()`` at a time, while tools run on threads. ``run(coro)`` drives a
    coroutine (e.g. ``EpisodeRunner.run``) to completion from synchronous code.

    Before each step the driver lets every runnable episode reach its next request or tool, so requests issued
    together are admitted together; with no tool in play the sequence of ``add``/``step`` calls is exactly that
    of adding every request and stepping until all are done."""

    def __init__(self, engine):
        self.engine = engine
        self._waiting: dict[int, tuple] = {}  # id(request) -> (request, future)
        self._adds = 0
        self._added: asyncio.Event | None = None

    async def generate(self, prompt_ids: list[int], n: int, sampling: SamplingParams) -> list[Completion]:
        req = self.engine.add(prompt_ids, n, sampling)
        future = asyncio.get_running_loop().create_future()
        self._waiting[id(req)] = (req, future)
        self._adds += 1
        self._added.set()
        return await future

    def run(self, coro):
        try:
            return asyncio.run(self._drive(coro))
        finally:  # a failed run leaves no request behind in the engine (its slots are freed)
            for req, _ in self._waiting.values():
                self.engine.cancel(req)
            self._waiting.clear()

    async def _drive(self, coro):
        self._added = asyncio.Event()
        main = asyncio.ensure_future(coro)
        while True:
            await self._settle()
            if main.done():
                return main.result()
            if self._waiting:
                if not self.engine.has_unfinished():
                    raise RuntimeError("engine went idle with requests unfinished")
                for req in self.engine.step():
                    _, future = self._waiting.pop(id(req))
                    future.set_result(req.completions)
            else:  # every live episode is inside a tool: wait for one to come back with a request (or the end)
                self._added.clear()
                wake = asyncio.ensure_future(self._added.wait())
                await asyncio.wait({main, wake}, return_when=asyncio.FIRST_COMPLETED)
                wake.cancel()

    async def _settle(self) -> None:
        """Yield to the event loop until a round of yields adds no request."""
        while True:
            before = self._adds
            for _ in range(4):
                await asyncio.sleep(0)
            if self._adds == before:
                return
