"""The ``slowthink`` command line's parser: one small function per command, options built from the config
dataclasses, refused prefixes and typos answered with the subcommand's usage and a "did you mean"."""

from __future__ import annotations

import argparse

from .config import add_arguments
from .chat import Mode
from .tasks.record import DEFAULT_TASK

def _config_parser(sub, name: str, cls, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("--config", help="YAML file of config fields (command-line options override it)")
    ray = "ray" in getattr(cls, "__dataclass_fields__", {})
    add_arguments(p, cls, skip=("ray",) if ray else ())
    if ray:  # --ray alone starts a local Ray; --ray ADDRESS joins a running head
        p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                       help="run rollout workers (and learners) as Ray actors: alone, start Ray on this machine; "
                            "with ADDRESS, join that head (e.g. 10.0.0.1:6379). Default: no Ray")
    return p

def trainers() -> dict:
    """Algorithm name -> (config class, train function); one trainer module per algorithm."""
    from .critics import train as critic
    from .rl import dpo, grpo, ppo, revise, rloo, star
    from .train import sft
    from .router import train as router

    return {"sft": (sft.SFTConfig, sft.train), "grpo": (grpo.GRPOConfig, grpo.train),
            "rloo": (rloo.RLOOConfig, rloo.train), "ppo": (ppo.PPOConfig, ppo.train),
            "star": (star.STaRConfig, star.train), "dpo": (dpo.DPOConfig, dpo.train),
            "revise": (revise.ReviseConfig, revise.train),
            "prm": (critic.PRMConfig, critic.train), "orm": (critic.ORMConfig, critic.train),
            "router": (router.RouterConfig, router.train)}

TRAINER_HELP = {
    "sft": "supervised fine-tuning on task-generated solutions",
    "grpo": "GRPO (and Dr. GRPO / DAPO options) on verifiable rewards, from a model folder (--init)",
    "rloo": "RLOO: REINFORCE with a leave-one-out baseline, from a model folder (--init)",
    "ppo": "PPO with a learned value model (critic) and GAE, from a model folder (--init)",
    "star": "STaR / expert iteration: fine-tune on the policy's own verified solutions (rationalisation optional)",
    "dpo": "offline DPO on pairs of the policy's own verified-correct vs incorrect samples",
    "revise": "reflect-and-revise: fine-tune on the policy's own drafts + 'Wait' + the correct solution "
              "(for --strategy reflect and budget forcing's Wait)",
    "prm": "process reward model: sample the policy (--init), label each step by Monte-Carlo rollouts "
           "(Math-Shepherd), train a step scorer on the policy's backbone; use with --verifier RUN/critic",
    "orm": "outcome reward model: sample the policy (--init), label by the task's answer check, train a "
           "completion scorer on the policy's backbone; use with --verifier RUN/critic",
    "router": "System-1/System-2 router for reasoning_effort=auto: label arms on generated problems, "
              "fit the difficulty predictor, save it beside the model"}

def _search_arguments(p, strategy_default: str | None) -> None:
    from .search import STRATEGIES

    p.add_argument("--strategy", default=strategy_default, choices=list(STRATEGIES),
                   help="test-time strategy" + (" (default: plain greedy/pass@k evaluation)" if strategy_default is None
                                                else ""))
    p.add_argument("--n", type=positive_int, default=None, help="samples (candidates per step for beam); default: "
                                                                "the strategy's own (8)")
    p.add_argument("--budget", type=positive_int, default=None, help="most policy tokens per problem (default: no "
                                                                     "limit)")
    p.add_argument("--verifier", default="none",
                   help="none; oracle: ground-truth step labels; outcome-oracle: ground-truth answer check (both not "
                        "learned); the folder of a learned critic (RUN/critic from slowthink train prm|orm); or "
                        "gen:MODEL_DIR: a generative verifier (each step scored by that model's likelihood of it)")
    p.add_argument("--strategy-args", default="", help="other strategy options, e.g. beam_width=2,agg=min or "
                                                       "max_thinking=64,min_thinking=0,max_waits=1")
    from .effort import EFFORTS

    p.add_argument("--reasoning-effort", default=None, choices=list(EFFORTS),
                   help="instead of --strategy: a named effort (slowthink/effort/); auto: the router saved "
                        "beside the model picks per question and says why")
    p.add_argument("--router", default="", help="router folder for auto (default: MODEL/router)")
    p.add_argument("--device", default="cpu", help="torch device of the model and learned verifiers (cpu, cuda, "
                                                   "cuda:1, ...)")

class Parser(argparse.ArgumentParser):
    """argparse taking whole option names only (``--step`` is not ``--steps``), and reporting an unknown option
    with the usage of the (sub)command it was given to and the closest option name."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def parse_args(self, args=None, namespace=None):
        ns, unknown = self.parse_known_args(args, namespace)
        if unknown:
            parser = self.command_parser(ns)
            parser.error(unknown_arguments_message(unknown, [s for a in parser._actions for s in a.option_strings]))
        return ns

    def command_parser(self, ns) -> argparse.ArgumentParser:
        """The parser of the innermost subcommand ``ns`` was parsed by."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and getattr(ns, action.dest, None) in action.choices:
                return action.choices[getattr(ns, action.dest)].command_parser(ns)
        return self

def unknown_arguments_message(unknown: list[str], options: list[str]) -> str:
    """``unrecognized arguments: --step 5 (--step: did you mean --steps?)``."""
    from difflib import get_close_matches

    hints = []
    for item in unknown:
        name = item.split("=")[0]
        close = get_close_matches(name, options, n=1) if name.startswith("--") else []
        hints += [f"{name}: did you mean {close[0]}?"] if close else []
    return f"unrecognized arguments: {' '.join(unknown)}" + (f" ({'; '.join(hints)})" if hints else "")

class DefaultsHelp(argparse.HelpFormatter):
    """Help that ends each option's text with its default, unless the text says it already or there is none."""

    def _get_help_string(self, action) -> str:
        text, default = action.help or "", action.default
        if "default" in text or default is None or default is False or default in ("", argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"

def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value

def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="slowthink", description="Train and serve slow-thinking models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_quickstart, _add_train, _add_eval, _add_solve, _add_serve, _add_traces, _add_tasks, _add_sample,
                _add_merge):
        add(sub)
    return parser

def _add_merge(sub) -> None:
    me = sub.add_parser("merge", help="merge a LoRA adapter (a LoRA run's adapter/ or ckpt/) into its base model: "
                                      "a plain model folder", formatter_class=DefaultsHelp)
    me.add_argument("--adapter", required=True, help="adapter folder (adapter_config.json, adapter_model.safetensors)")
    me.add_argument("--out", required=True, help="folder to write the merged model and tokenizer to")
    me.add_argument("--base", default="", help="base model folder (default: the one adapter_config.json names)")
    me.add_argument("--device", default="cpu", help="torch device to merge on")

def _add_quickstart(sub) -> None:
    from .quickstart import QuickstartConfig

    _config_parser(sub, "quickstart", QuickstartConfig,
                   "train a small reasoning model from scratch and compare System-1 with System-2")

def _add_train(sub) -> None:
    tr = sub.add_parser("train", help="train a model (" + ", ".join(trainers()) + ")")
    trs = tr.add_subparsers(dest="algo", required=True)
    for name, (cfg_cls, _) in trainers().items():
        _config_parser(trs, name, cfg_cls, TRAINER_HELP[name])

def _model_and_task_arguments(p) -> None:
    p.add_argument("--model", required=True, help="model folder (e.g. RUN/model)")
    p.add_argument("--task", default="", help="task name or path/to/file.py:ClassName (default: the task the model "
                                              "was trained on, from its task.json; else arithmetic)")
    p.add_argument("--task-args", default="", help="task constructor arguments, e.g. op=mul (with the model's task: "
                                                   "laid over the ones it was trained with)")
    p.add_argument("--strict-verifier", action="store_true",
                   help="stop when the task's score() raises on a completion (default: count that completion as "
                        "malformed, report the crash once per line, go on)")

def _add_eval(sub) -> None:
    ev = sub.add_parser("eval", help="held-out pass@1 / pass@k / maj@k by level, System-1 and System-2",
                        formatter_class=DefaultsHelp)
    _model_and_task_arguments(ev)
    ev.add_argument("--levels", default="", help="comma-separated levels (default: those the model was trained on, "
                                                 "else all of the task's)")
    ev.add_argument("--per-level", type=positive_int, default=100,
                    help="held-out problems per level: the first of the named held-out set, the one the trainers "
                         "evaluate on (fewer where a level has fewer)")
    ev.add_argument("--modes", default=None, help="modes to evaluate (default: those the model was trained on; a "
                                                  "System-2-only strategy: system2)")
    ev.add_argument("--k", type=positive_int, default=1, help="samples per problem for pass@k and maj@k")
    ev.add_argument("--temperature", type=float, default=1.0, help="sampling temperature for k > 1")
    ev.add_argument("--max-new-tokens", type=positive_int, default=256, help="generation limit")
    ev.add_argument("--seed", type=int, default=0, help="sampling seed (the held-out problems do not depend on it)")
    ev.add_argument("--json-out", default="", help="write results JSON here (default: print it)")
    _tools_arguments(ev)
    _search_arguments(ev, None)

def _tools_arguments(p) -> None:
    """Tool use in plain evaluation: each problem a multi-turn episode (docs/environments.md)."""
    p.add_argument("--tools", default="", help="tools the model may call while it reasons (calculator, python, memory, "
                                               "retrieve), comma-separated; default: none, one turn")
    p.add_argument("--tools-file", default="", help="a Python file of your own tool functions")
    p.add_argument("--tools-prompt", default="full", choices=["full", "none"],
                   help="full: the tool instructions and schemas in a system message; none: the task's prompt")
    p.add_argument("--max-tool-calls", type=positive_int, default=4, help="tool calls per episode")
    p.add_argument("--max-turns", type=positive_int, default=8, help="assistant turns per episode")

def _add_solve(sub) -> None:
    so = sub.add_parser("solve", help="solve one problem with a test-time strategy; print reasoning, answer, tokens",
                        formatter_class=DefaultsHelp)
    _model_and_task_arguments(so)
    so.add_argument("--question", default="", help="the problem as you would type it, e.g. 47*86 (read by the "
                                                    "task's parse_question); else a held-out problem of --level is "
                                                    "generated from --seed")
    so.add_argument("--level", type=int, default=None, help="level of the generated problem (default: the task's "
                                                            "first)")
    so.add_argument("--mode", default=None, choices=[Mode.SYSTEM1, Mode.SYSTEM2],
                    help="answer directly or think first (default: system2 when the model learned it, else system1)")
    so.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (greedy: always 0)")
    so.add_argument("--max-new-tokens", type=positive_int, default=256, help="longest single completion")
    so.add_argument("--seed", type=int, default=0, help="sampling seed, and the generated problem's")
    so.add_argument("--json-out", default="", help="also write the Solution as JSON here")
    _search_arguments(so, "greedy")

def _add_serve(sub) -> None:
    from .serve.limits import Limits

    sv = sub.add_parser("serve", help="OpenAI-compatible HTTP server (/v1/models, /v1/chat/completions, /v1/jobs, "
                                      "/v1/feedback), storing every completion in a trace database")
    sv.add_argument("--model", required=True,
                    help="model folder (e.g. RUN/model); with --backend openai, the remote model's name")
    sv.add_argument("--backend", choices=["local", "openai"], default="local",
                    help="'local': generate with --model in this process (default); 'openai': forward generation "
                         "to the OpenAI-compatible server at --base-url (vLLM, Ollama, a hosted API, slowthink)")
    sv.add_argument("--base-url", default=None, metavar="URL",
                    help="the remote server's API root, e.g. http://127.0.0.1:8000/v1 (--backend openai)")
    sv.add_argument("--remote-api-key", default=None, metavar="KEY",
                    help="bearer key for the remote server; prefer $SLOWTHINK_REMOTE_API_KEY (a command line can "
                         "be read by other users)")
    sv.add_argument("--remote-timeout", type=float, default=600.0, metavar="S",
                    help="seconds to wait for the remote (connect: at most 10); too slow -> 504 (default: 600)")
    sv.add_argument("--remote-logprobs", action="store_true",
                    help="the remote returns token log-probs (vLLM, OpenAI): forward 'logprobs' requests; "
                         "without it they are refused with a 400")
    sv.add_argument("--served-model-name", default=None, metavar="NAME",
                    help="the model name clients ask for (default: the model folder's name, or --model with "
                         "--backend openai)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--api-key", default=None, metavar="KEY",
                    help="require 'Authorization: Bearer KEY'; prefer $SLOWTHINK_API_KEY or --api-key-file (a "
                         "command line can be read by other users)")
    sv.add_argument("--api-key-file", default=None, metavar="PATH",
                    help="named keys, one 'NAME KEY' (or 'KEY') per line; each key sees only its own jobs and traces")
    sv.add_argument("--allow-unauthenticated", action="store_true",
                    help="serve beyond loopback (--host) without an API key (refused otherwise)")
    sv.add_argument("--allowed-hosts", default=None, metavar="NAMES",
                    help="comma-separated Host names clients may address the server by, '*' for any (default: "
                         "the loopback names when bound to loopback, any otherwise)")
    sv.add_argument("--max-batch", type=int, default=64, help="sequences decoded together")
    sv.add_argument("--max-queue", type=int, default=256,
                    help="requests waiting for an engine slot before new ones get 429 (default: 256)")
    sv.add_argument("--device", default="cpu", help="torch device of the local model (cpu, cuda, cuda:1, ...)")
    sv.add_argument("--traces", default=None, metavar="PATH",
                    help="SQLite trace database: every returned completion is stored there (default: traces.db "
                         "in the folder above --model, e.g. runs/x/traces.db for runs/x/model; ./traces.db with "
                         "--backend openai; 'off': none)")
    sv.add_argument("--jobs", default=None, metavar="PATH",
                    help="SQLite database of /v1/jobs (default: jobs.db beside the trace database; 'off': no "
                         "jobs API)")
    sv.add_argument("--job-concurrency", type=int, default=8, help="jobs run at the same time (default: 8)")
    sv.add_argument("--builtin-tools", default=None, metavar="NAMES",
                    help="tools the server runs itself inside requests, comma-separated: calculator, python, memory, "
                         "retrieve (docs/serving.md#tools)")
    sv.add_argument("--tools-file", default=None, metavar="PATH",
                    help="a Python file of your own tool functions, run by the server like --builtin-tools")
    sv.add_argument("--tool-args", default=None, metavar="K=V,...",
                    help="options of the built-in tools, e.g. memory_db=runs/x/memory.sqlite,python_timeout_s=5")
    add_arguments(sv.add_argument_group("limits (docs/serving.md)"), Limits)

def _add_traces(sub) -> None:
    tc = sub.add_parser("traces", help="work with the trace database of 'slowthink serve'")
    tcs = tc.add_subparsers(dest="traces_command", required=True)
    te = tcs.add_parser("export", help="write the stored traces as JSONL, one record per returned choice")
    te.add_argument("--db", required=True, help="trace database written by slowthink serve (e.g. runs/x/traces.db)")
    te.add_argument("--out", required=True, help="JSONL file to write")
    te.add_argument("--verified-only", action="store_true",
                    help="only traces verified correct (by feedback, else by the task named in the request's metadata)")

def _add_tasks(sub) -> None:
    sub.add_parser("tasks", help="list built-in tasks")

def _add_sample(sub) -> None:
    sa = sub.add_parser("sample", help="print a generated problem and its reference solution",
                        formatter_class=DefaultsHelp)
    sa.add_argument("--task", default=DEFAULT_TASK, help="task name or path/to/file.py:ClassName")
    sa.add_argument("--task-args", default="", help="task constructor arguments, e.g. op=mul")
    sa.add_argument("--level", type=int, default=None, help="difficulty level (default: the task's first)")
    sa.add_argument("--mode", default=Mode.SYSTEM2, choices=[Mode.SYSTEM1, Mode.SYSTEM2],
                    help="system2: a worked solution, then the answer; system1: the answer alone")
    sa.add_argument("--seed", type=int, default=0, help="seed of the generated problem")
