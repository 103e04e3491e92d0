"""Theory of random Fixed Parameter Expansion: clause coverage and clause collisions.

Paper: Sec. 2.5 and A.5. :mod:`fpe_ref.theory.closed_form` holds the formulas (each tagged
with the paper's section), :mod:`~fpe_ref.theory.monte_carlo` the seeded simulators that check
them (numba), :mod:`~fpe_ref.theory.check` and :mod:`~fpe_ref.theory.plot` the library code of
``fpe theory check`` / ``fpe theory plot``, :mod:`fpe_ref.commands.theory` is their click group.

The folder ``theory/`` sits at the repository root and installs as ``fpe_ref.theory``
(``[tool.setuptools.package-dir]`` in pyproject.toml). It imports the core of fpe_ref
(errors, rng, splits) and nothing above it.
"""
