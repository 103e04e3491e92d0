"""Theory of random Fixed Parameter Expansion: clause coverage and clause collisions.

Paper: Sec. 2.5 and A.5. :mod:`theory.closed_form` holds the formulas (each tagged with the
paper's section), :mod:`theory.monte_carlo` the seeded simulators that check them,
:mod:`theory.check` and :mod:`theory.plot` the ``fpe theory check`` / ``fpe theory plot``
commands' library code, :mod:`fpe_ref.theory.commands` the click group.
"""
