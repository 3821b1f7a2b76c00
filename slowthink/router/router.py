"""The router: signals -> predicted success and cost per arm -> the arm to run, per question.

A trained router is a folder (by default ``MODEL_DIR/router/``, so it is loaded with its model):
``router.json`` (arms, signals, models, defaults, validation metrics) and ``predictor.safetensors``.

Every routed question pays for its signals (``signals.py``); the arm's tokens come on top, except that a
System-1 greedy arm reuses the System-1 answer the ``s1`` signal already produced, and a System-2 greedy arm
the solution the ``s2check`` signal already produced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .arms import Arm
from .policy import choose_for_budget, choose_within
from .predictor import Predictor
from .signals import Signals, check_signals
from ..chat import Mode

ROUTER_DIR = "router"


@dataclass
class Decision:
    arm: int  # index into Router.arms
    success: np.ndarray  # [A] predicted success of each arm
    cost: np.ndarray  # [A] predicted extra tokens of each arm (after the signals)
    signal_tokens: int
    why: str


@dataclass
class Router:
    arms: list[Arm]
    signals: tuple[str, ...]
    predictor: Predictor
    feature_names: list[str]
    tradeoff: float = 0.05  # default of choose_within
    signal_max_tokens: int = 64
    models: dict[str, str] = field(default_factory=dict)  # model name -> folder (two-model mode)
    task: dict = field(default_factory=dict)  # {"task": name, "task_args": {...}} it was trained on
    metrics: dict = field(default_factory=dict)  # validation AUROC etc., for the record

    def __post_init__(self):
        self.signals = check_signals(self.signals)

    @property
    def arm_names(self) -> list[str]:
        return [a.name for a in self.arms]

    def reused(self) -> list[str | None]:
        """Per arm, the signal that already produced its answer (no extra tokens): ``s1`` for System-1 greedy,
        ``s2check`` for System-2 greedy at the same generation limit; None for the others."""
        out: list[str | None] = []
        for a in self.arms:
            if "s1" in self.signals and a.mode == Mode.SYSTEM1 and a.greedy and a.model == self.signal_model("fast"):
                out.append("s1")
            elif ("s2check" in self.signals and a.mode == Mode.SYSTEM2 and a.greedy and a.model == self.signal_model("slow")
                  and a.max_tokens == self.s2_signal_max_tokens):
                out.append("s2check")
            else:
                out.append(None)
        return out

    def reuses_s1(self) -> np.ndarray:
        """[A] True for arms whose answer the ``s1`` signal already produced."""
        return np.array([r == "s1" for r in self.reused()])

    @property
    def s2_signal_max_tokens(self) -> int:
        """The ``s2check`` signal's generation limit: the System-2 greedy arm's, so that arm can reuse it."""
        return next((a.max_tokens for a in self.arms if a.mode == Mode.SYSTEM2 and a.greedy), 256)

    def signal_model(self, role: str) -> str:
        """Which engine computes the signals: System-1 signals on the System-1 arms' model ('fast'),
        the prompt signal on the System-2 arms' model ('slow')."""
        mode = Mode.SYSTEM1 if role == "fast" else Mode.SYSTEM2
        return next((a.model for a in self.arms if a.mode == mode), self.arms[0].model)

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted success [Q, A] and extra tokens [Q, A] (0 for arms that reuse the s1 answer)."""
        p = self.predictor.success(features)
        c = self.predictor.cost(features)
        c[:, np.array([r is not None for r in self.reused()])] = 0.0
        return p, c

    def choose(self, features: np.ndarray, tradeoff: float | None = None,
               mean_budget: float | None = None) -> np.ndarray:
        """Arm index per question: cheapest within ``tradeoff`` of the best predicted, or, with
        ``mean_budget`` (mean tokens per question on top of the signals'), the compute-optimal allocation."""
        p, c = self.predict(features)
        if mean_budget is not None:
            return choose_for_budget(p, c, mean_budget)
        return choose_within(p, c, self.tradeoff if tradeoff is None else tradeoff)

    def decide(self, sig: Signals, i: int = 0, tradeoff: float | None = None) -> Decision:
        """The decision for question ``i`` of ``sig``, with the reason in words."""
        return self.decide_features(sig.features[i], int(sig.tokens[i]), tradeoff)

    def decide_features(self, x: np.ndarray, signal_tokens: int, tradeoff: float | None = None) -> Decision:
        t = self.tradeoff if tradeoff is None else tradeoff
        p, c = self.predict(np.asarray(x, np.float64)[None])
        p, c = p[0], c[0]
        j = int(choose_within(p[None], c[None], t)[0])
        best = int(p.argmax())
        preds = ", ".join(f"{n} {pi:.2f}" for n, pi in zip(self.arm_names, p))
        why = (f"predicted success: {preds}. Chose {self.arms[j].name} ({self.arms[j].describe()}): the cheapest arm "
               f"(~{c[j]:.0f} more tokens) within {t:g} of the best predicted ({self.arms[best].name} {p[best]:.2f})")
        return Decision(j, p, c, signal_tokens, why)

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        from safetensors.numpy import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v) for k, v in self.predictor.state().items()},
                  str(path / "predictor.safetensors"))
        meta = dict(arms=[a.to_dict() for a in self.arms], signals=list(self.signals),
                    feature_names=self.feature_names, tradeoff=self.tradeoff,
                    signal_max_tokens=self.signal_max_tokens, models=self.models, task=self.task,
                    metrics=self.metrics)
        tmp = path / "router.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(path / "router.json")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Router:
        from safetensors.numpy import load_file

        path = Path(path)
        if (path / ROUTER_DIR / "router.json").is_file():  # given the model folder
            path = path / ROUTER_DIR
        if not (path / "router.json").is_file():
            raise FileNotFoundError(f"{path}: no router.json; train one with: slowthink train router --model MODEL_DIR")
        try:
            meta = json.loads((path / "router.json").read_text())
            predictor = Predictor.from_state(load_file(str(path / "predictor.safetensors")))
            arms = [Arm(**a) for a in meta["arms"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a valid router folder ({type(e).__name__}: {e})") from e
        return cls(arms=arms, signals=tuple(meta["signals"]), predictor=predictor,
                   feature_names=meta["feature_names"], tradeoff=meta["tradeoff"],
                   signal_max_tokens=meta["signal_max_tokens"], models=meta.get("models", {}),
                   task=meta.get("task", {}), metrics=meta.get("metrics", {}))


def find_router(model_dir: str | Path) -> Router | None:
    """The router saved beside a model (``MODEL_DIR/router``), or None."""
    p = Path(model_dir) / ROUTER_DIR
    return Router.load(p) if (p / "router.json").is_file() else None
