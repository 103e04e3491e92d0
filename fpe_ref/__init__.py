"""fpe-ref: reference implementation of Fixed Parameter Expansion (FPE).

Paper: Kong, Subramanian et al., "Expand Neurons, Not Parameters" (2025).

The top of the package is the paper's pipeline, one NumPy module per step: data
(:mod:`fpe_ref.data.dnf`, Alg. A2) -> model (:mod:`fpe_ref.mlp`, :mod:`fpe_ref.layers`) ->
train (:mod:`fpe_ref.train`, Alg. A3, with :mod:`fpe_ref.optim`) -> expand
(:mod:`fpe_ref.expand`, Alg. A1, masks from :mod:`fpe_ref.splits`; :mod:`fpe_ref.deep` for
deep nets, A.7) -> train -> metrics (:mod:`fpe_ref.metrics`). The names below are that
pipeline's public API; importing them loads NumPy only (no numba, click or matplotlib)::

    from fpe_ref import MLP, TrainConfig, expand, generate_dnf, metrics, train

    data = generate_dnf(10_000, m=32, k=4, rng=0)                    # data: Alg. A2, 8 clauses
    dense = MLP.init([32, 8, 1], rng=0)                               # model: Linear-ReLU-Linear
    train(dense, data.X, data.y, TrainConfig(epochs=1000), rng=1)     # train: Alg. A3, phase 1
    wide = expand(dense, 2, "clause", rng=2, groups=data.clauses).model  # expand: Alg. A1
    train(wide, data.X, data.y, TrainConfig(epochs=1000), rng=3)      # train: phase 2, masks fixed
    metrics.interference(wide.params["W1"], data.clauses)             # metrics: capacity, cosine

``wide`` has 16 hidden neurons and exactly the 264 non-zero weights of ``dense``
(``wide.ledger()``). Every argument named ``rng`` takes an int seed or a ``numpy.random.Generator``
(:func:`as_rng`); :func:`stream` derives independent named streams from one seed. Bad input
raises :class:`FPEError` with a one-line message.

The function names ``train`` and ``expand`` are also the names of their modules: as
attributes of the package they are the functions, so import module contents with
``from fpe_ref.train import TrainConfig`` (never ``import fpe_ref.train as ...``).

The subpackages do the other jobs and import this layer, never the reverse:
:mod:`fpe_ref.fast` (numba kernels and batched training), :mod:`fpe_ref.experiments`
(run store, trainer registry, the paper's experiments), :mod:`fpe_ref.parity` (golden
bundles, the PyTorch twin), :mod:`fpe_ref.commands` (the ``fpe`` command) and
:mod:`fpe_ref.theory` (Sec. 2.5 / A.5).
"""

from fpe_ref import metrics, splits
from fpe_ref.data.dnf import generate_dnf
from fpe_ref.deep import expand_alternating
from fpe_ref.errors import FPEError
from fpe_ref.expand import expand
from fpe_ref.mlp import MLP
from fpe_ref.rng import as_rng, stream
from fpe_ref.train import TrainConfig, train

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "TrainConfig",
    "train",
    "expand",
    "expand_alternating",
    "splits",
    "metrics",
    "generate_dnf",
    "stream",
    "as_rng",
    "FPEError",
    "__version__",
]
