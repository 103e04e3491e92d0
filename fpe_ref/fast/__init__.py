"""The compiled fast path of Alg. A3: the only package of fpe_ref that imports numba.

Each piece is tested equal to the NumPy modules on top of the package (``tests/fast/``):

* :mod:`fpe_ref.fast.kernels`: one masked layer: its sparse storage (CSR plus a transposed
  index), the three products of a step (forward, input gradient, weight gradient) and Adam,
  each as a plain Python function, a compiled kernel and a NumPy twin.
* :mod:`fpe_ref.fast.fused`: the fused training step of a one-hidden-layer MLP (gather,
  forward, loss, backward, penalties and Adam in one compiled call) and its epoch loop, in a
  serial and a parallel variant; the arrays travel as a few named tuples.
* :mod:`fpe_ref.fast.trainer`: :func:`~fpe_ref.fast.trainer.train_batched`, many models
  trained side by side, each exactly as :func:`fpe_ref.train.train` trains it (to rounding).
* :mod:`fpe_ref.fast.threads`: numba's thread count and the BLAS limits of the dense mirrors.

Experiments choose this trainer through :mod:`fpe_ref.experiments.trainers` (``"numba"``).
"""
