"""The difficulty predictor: from a question's signals, the chance each arm answers it correctly and the
tokens each arm will spend on it. Linear models on standardised features, one output per arm:

* success: logistic regression (L2-regularised, fitted with L-BFGS on the whole set);
* cost: ridge regression of log(1 + tokens), because token counts grow multiplicatively with difficulty.

Labels come from the model's own results on generated training problems (``arms.arm_table``): no human
labels. Small and convex on purpose: a few hundred labelled questions must be enough.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..evaluate import auroc  # noqa: F401 - re-exported: the router's metric


@dataclass
class Predictor:
    mean: np.ndarray  # [F] feature standardisation
    std: np.ndarray  # [F]
    w_success: np.ndarray  # [F, A]
    b_success: np.ndarray  # [A]
    w_cost: np.ndarray  # [F, A]
    b_cost: np.ndarray  # [A]

    def _z(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - self.mean) / self.std

    def success(self, x: np.ndarray) -> np.ndarray:
        """[Q, A] predicted probability that each arm answers correctly."""
        return 1.0 / (1.0 + np.exp(-(self._z(x) @ self.w_success + self.b_success)))

    def cost(self, x: np.ndarray) -> np.ndarray:
        """[Q, A] predicted generated tokens of each arm."""
        return np.maximum(np.expm1(self._z(x) @ self.w_cost + self.b_cost), 0.0)

    def state(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, np.float64) for k, v in vars(self).items()}

    @classmethod
    def from_state(cls, state: dict) -> Predictor:
        return cls(**{k: np.asarray(state[k], np.float64) for k in
                      ("mean", "std", "w_success", "b_success", "w_cost", "b_cost")})


def fit_logistic(z: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Weights [F, A] and biases [A] minimising mean BCE + l2/(2Q) |w|^2, one column per arm.
    A constant label column (an arm always right or always wrong) gets w = 0 and a clipped bias."""
    zt = torch.tensor(z, dtype=torch.float64)
    yt = torch.tensor(np.asarray(y, np.float64))
    q, f = zt.shape
    w = torch.zeros(f, yt.shape[1], dtype=torch.float64, requires_grad=True)
    prior = yt.mean(0).clamp(1e-3, 1 - 1e-3)
    b = torch.log(prior / (1 - prior)).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(zt @ w + b, yt) + l2 / (2 * q) * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), b.detach().numpy()


def fit_ridge(z: np.ndarray, y: np.ndarray, l2: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge on centred targets: weights [F, A], biases [A]."""
    y = np.asarray(y, np.float64)
    b = y.mean(0)
    w = np.linalg.solve(z.T @ z + l2 * np.eye(z.shape[1]), z.T @ (y - b))
    return w, b


def fit_predictor(x: np.ndarray, correct: np.ndarray, tokens: np.ndarray, l2: float = 1.0) -> Predictor:
    x = np.asarray(x, np.float64)
    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 1e-8, std, 1.0)  # constant features (e.g. always well formed) carry nothing
    z = (x - mean) / std
    ws, bs = fit_logistic(z, correct.astype(np.float64), l2)
    wc, bc = fit_ridge(z, np.log1p(tokens.astype(np.float64)), l2)
    return Predictor(mean, std, ws, bs, wc, bc)
