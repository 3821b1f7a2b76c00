"""Monte-Carlo tree search over reasoning steps, valued by a process verifier (System-2 only).

UCT (Kocsis & Szepesvári, "Bandit Based Monte-Carlo Planning", ECML 2006) on a tree whose nodes are reasoning
prefixes and whose edges are single steps (lines, ``STEP_DELIMITER``, as in beam search). For LLM reasoning it
follows ReST-MCTS* (Zhang et al., "ReST-MCTS*: LLM Self-Training via Process Reward Guided Tree Search", 2024,
arXiv:2406.03816) in valuing a partial solution with a process reward model instead of rolling it out, and
RAP (Hao et al., "Reasoning with Language Model is Planning with World Model", 2023, arXiv:2305.14992) in
treating each reasoning step as an action.

One simulation: from the root, descend to the child maximising ``Q + c * sqrt(ln N_parent / N_child)`` until
a node not yet expanded; expand it with ``expand`` candidate next steps sampled in one batched engine call
(stopping at the step delimiter), or, when its text has closed the think block, with ``expand`` candidate
answers sampled to the end of the turn; value every new child with the verifier's step scores aggregated by ``agg``; back the
values up (Q is the mean of all values below a node). A finished completion (end of turn, answer sampled, or
``policy.max_tokens`` reached) is terminal and valued by its final score: 0 when malformed, else the
verifier's outcome score when it has ``score``, else its aggregated step score; selecting it again backs
that value up once more. The search stops after ``simulations`` simulations or when the budget cannot pay
for another expansion, and returns the finished completion with the highest mean value (well-formed first,
then visit count); with none finished, the most promising prefix (highest Q, then visits, from the root) is
completed greedily if the budget still allows it.

Departures: no rollouts and no reasoning-distance weighting of the value (ReST-MCTS*), no self-evaluation
rewards (RAP): the value is the verifier's score of the prefix alone. Every child of an expansion is
valued and counted as one visit (a batched expansion rather than one child per simulation), a node is
expanded once (no progressive widening), and identical sibling steps are merged (their tokens still count).
The final pick is the best finished leaf, not the most visited root child, and the tree is not used for
training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..chat import Mode, STEP_DELIMITER, THINK_CLOSE
from .base import (
    AGGREGATIONS,
    BudgetExhausted,
    Policy,
    Solution,
    reasoning_steps,
    require_verifier,
    score_completion,
    score_steps,
    verifier_tokens,
)


@dataclass(eq=False)
class Node:
    text: str = ""  # completion text so far
    tokens: int = 0  # tokens generated along this path (for policy.max_tokens)
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    value: float = 0.0  # the verifier's value of this prefix (its final score when done)
    total: float = 0.0  # sum of the values backed up through this node
    visits: int = 0
    done: bool = False
    well_formed: bool = False
    expanded: bool = False

    @property
    def q(self) -> float:
        return self.total / self.visits if self.visits else 0.0

    def backup(self, value: float) -> None:
        node = self
        while node is not None:
            node.visits += 1
            node.total += value
            node = node.parent


def uct(child: Node, parent_visits: int, c: float) -> float:
    return child.q + c * math.sqrt(math.log(parent_visits) / child.visits)


def check_options(verifier, policy: Policy, simulations: int, expand: int, c: float, agg: str) -> None:
    require_verifier(verifier, "mcts")
    if not callable(getattr(verifier, "score_steps", None)):
        raise ValueError(f"MCTS values prefixes with a step verifier (score_steps); {type(verifier).__name__} has none")
    if policy.mode != Mode.SYSTEM2:
        raise ValueError("MCTS works on reasoning steps: use mode system2")
    if simulations < 1 or expand < 1:
        raise ValueError(f"need simulations >= 1 and expand >= 1, got simulations={simulations}, expand={expand}")
    if c < 0:
        raise ValueError(f"the exploration constant c must be >= 0, got {c}")
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg must be one of {sorted(AGGREGATIONS)}, got {agg!r}")


def evaluate(node: Node, problem, policy: Policy, verifier, agg: str) -> None:
    """A node's value: the verifier's score of its steps so far, or of the whole completion once it is done."""
    if not node.done:
        node.value = score_steps(verifier, problem, reasoning_steps(policy, node.text), agg)
        return
    node.well_formed = policy.task.score(problem, node.text, policy.mode).well_formed
    # A malformed completion answers nothing, whatever its steps look like.
    node.value = score_completion(verifier, policy, problem, node.text, agg) if node.well_formed else 0.0


def expand_leaf(leaf: Node, problem, policy: Policy, verifier, meter, expand: int, step_tokens: int, agg: str) -> None:
    """Sample ``expand`` next steps (or, once the think block is closed, whole answers) from ``leaf``; each
    distinct one becomes a child, valued and backed up. Raises BudgetExhausted."""
    answering = THINK_CLOSE in leaf.text
    room = policy.max_tokens - leaf.tokens
    comps = policy.continue_from(problem, leaf.text, expand, meter,
                                 max_tokens=room if answering else min(step_tokens, room),
                                 stop=() if answering else (STEP_DELIMITER,))
    seen = set()
    for comp in comps:
        eos = policy.ended_turn(comp)
        delim = STEP_DELIMITER if comp.finish_reason == "stop" and not eos and not answering else ""
        text = leaf.text + comp.text + delim
        if text in seen:  # one node per distinct prefix, so sibling visits are not split among duplicates
            continue
        seen.add(text)
        tokens = leaf.tokens + len(comp.token_ids)
        child = Node(text, tokens, parent=leaf, done=answering or eos or tokens >= policy.max_tokens)
        evaluate(child, problem, policy, verifier, agg)
        leaf.children.append(child)
        child.backup(child.value)
    leaf.expanded = True


def solve(problem, policy: Policy, verifier=None, budget: int | None = None, *, simulations: int = 16,
          expand: int = 4, c: float = 1.0, agg: str = "last", step_tokens: int | None = None) -> Solution:
    check_options(verifier, policy, simulations, expand, c, agg)
    step_tokens = step_tokens or policy.max_tokens
    meter = policy.new_meter(problem, budget, "mcts")
    v0 = verifier_tokens(verifier)
    root, run, exhausted = Node(), 0, False
    while run < simulations:
        leaf = root
        while leaf.expanded:
            leaf = max(leaf.children, key=lambda ch, n=leaf.visits: uct(ch, n, c))
        if leaf.done:
            leaf.backup(leaf.value)
        else:
            try:
                expand_leaf(leaf, problem, policy, verifier, meter, expand, step_tokens, agg)
            except BudgetExhausted:
                exhausted = True
                break
        run += 1
    best, text, completed, out_of_budget = pick_answer(root, problem, policy, meter)
    finished = [n for n in _walk(root) if n.done]
    return policy.solution(problem, text, meter, verifier, v0, simulations=run, tree_size=sum(1 for _ in _walk(root)),
                           finished_leaves=len(finished), value=best.q, visits=best.visits,
                           completed_greedily=completed, budget_exhausted=exhausted or out_of_budget)


def pick_answer(root: Node, problem, policy: Policy, meter) -> tuple[Node, str, bool, bool]:
    """(node, text, completed greedily, budget ran out): the best finished leaf, else the most valued path
    finished greedily."""
    finished = [n for n in _walk(root) if n.done]
    if finished:
        best = max(finished, key=lambda n: (n.well_formed, n.q, n.visits))
        return best, best.text, False, False
    best = root
    while best.children:
        best = max(best.children, key=lambda n: (n.q, n.visits))
    try:
        [comp] = policy.continue_from(problem, best.text, 1, meter, max_tokens=policy.max_tokens - best.tokens,
                                      temperature=0.0)
    except BudgetExhausted:
        return best, best.text, False, True
    return best, best.text + comp.text, True, False


def _walk(node: Node):
    yield node
    for child in node.children:
        yield from _walk(child)
