"""Adam and the penalties of Algorithm A3, as explicit update formulas.

Paper: A.3.1 and Alg. A3 lines 12-19. The training loss of one batch is

    l = BCE(z, y) + lambda_1 ||W1||_1 + lambda_2 sum_p ||p||_2^2 + lambda_orth ||W1 W1^T - I||_F^2

with ``||p||_2^2`` the *sum of squares* of every parameter (weights, biases, LayerNorm), as
``sum(p.pow(2).sum() for p in model.parameters())`` in PyTorch. Gradients:

    d/dW1  lambda_1 ||W1||_1           = lambda_1 sign(W1)          (sign(0) = 0, as torch)
    d/dp   lambda_2 ||p||^2            = 2 lambda_2 p
    d/dW1  lambda_orth ||W1W1^T - I||^2 = 4 lambda_orth (W1 W1^T - I) W1

All gradients of a masked weight are multiplied by its mask (the orthogonality gradient is
non-zero at masked positions otherwise), so Adam's moments there are 0 and stay 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Penalties:
    """Penalty coefficients (A.3.1 defaults)."""

    l1: float = 1e-7  # lambda_1, on the first layer's weights W1
    l2: float = 1e-5  # lambda_2, sum of squares of all parameters
    orth: float = 0.0  # lambda_orth, ||W1 W1^T - I||_F^2 (A3 line 17; off in the paper's runs)

    def scaled(self, r: float) -> "Penalties":
        return Penalties(self.l1 * r, self.l2 * r, self.orth * r)


def penalty_loss_and_grads(params: dict, masks: dict, pen: Penalties):
    """Penalty value and its gradient for every parameter (masked where a mask exists)."""
    loss = 0.0
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    W1 = params["W1"]
    if pen.l1:
        loss += pen.l1 * float(np.abs(W1).sum())
        grads["W1"] += pen.l1 * np.sign(W1)
    if pen.l2:
        for k, p in params.items():
            loss += pen.l2 * float(np.sum(p * p))
            grads[k] += 2.0 * pen.l2 * p
    if pen.orth:
        R = W1 @ W1.T - np.eye(W1.shape[0], dtype=W1.dtype)  # (h, h)
        loss += pen.orth * float(np.sum(R * R))
        grads["W1"] += 4.0 * pen.orth * (R @ W1)
    for k, M in masks.items():
        grads[k] *= M
    return loss, grads


def schedule(cfg, epoch: int):
    """Alg. A3 line 8 for epoch ``epoch = 1..N``: ``(learning rate, Penalties)`` after the warm-up.

    ``r = min(1, epoch / W)``; ``cfg.warmup`` says what ``r`` scales (the paper is silent,
    :mod:`fpe_ref.train` lists the readings): ``"lr"`` gives ``r * lr``, ``"penalty"`` gives
    ``r * lambda`` for every penalty, ``"none"`` leaves both unscaled. ``W`` is
    ``cfg.warmup_epochs``, or the phase's own ``cfg.epochs`` where that is None (the paper's
    N = W). ``cfg`` is a :class:`~fpe_ref.train.TrainConfig` (any object with ``lr``,
    ``warmup``, ``warmup_epochs``, ``epochs`` and ``penalties``). Every trainer of fpe-ref
    takes its epoch's coefficients from here.
    """
    warmup_epochs = cfg.warmup_epochs or max(cfg.epochs, 1)  # None: warm up over the whole phase
    r = min(1.0, epoch / warmup_epochs)
    lr = cfg.lr * r if cfg.warmup == "lr" else cfg.lr
    pen = cfg.penalties.scaled(r) if cfg.warmup == "penalty" else cfg.penalties
    return lr, pen


class Adam:
    """Adam with PyTorch's semantics (``torch.optim.Adam``, no weight decay, no amsgrad).

    For step ``t = 1, 2, ...`` and gradient ``g``::

        m <- beta1 m + (1 - beta1) g
        v <- beta2 v + (1 - beta2) g^2
        p <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    evaluated in exactly that order (PyTorch's single-tensor ``_single_tensor_adam``), so a
    float64 comparison with torch agrees to rounding.

    A masked weight has ``g = 0`` at every step, so ``m = v = 0`` and its update is
    ``0 / (0 + eps) = 0``: it stays exactly 0.0. ``step`` re-applies the mask anyway, so the
    invariant never depends on floating-point luck.
    """

    def __init__(self, params: dict, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.lr, self.betas, self.eps = float(lr), tuple(betas), float(eps)
        self.t = 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params: dict, grads: dict, masks: dict, lr=None):
        lr = self.lr if lr is None else lr
        b1, b2 = self.betas
        self.t += 1
        step_size = lr / (1.0 - b1**self.t)
        c2_sqrt = (1.0 - b2**self.t) ** 0.5
        for k, p in params.items():
            g = grads[k]
            m, v = self.m[k], self.v[k]
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            p -= step_size * (m / (np.sqrt(v) / c2_sqrt + self.eps))
            if k in masks:
                p[~masks[k]] = 0.0

    def state(self) -> dict:
        """Flat dict of the optimizer state (for export and comparison)."""
        out = {"t": np.array(self.t)}
        out.update({f"m:{k}": v for k, v in self.m.items()})
        out.update({f"v:{k}": v for k, v in self.v.items()})
        return out
