"""The ``fpe`` command, for a source checkout: ``python cli.py --help``.

The click group and ``main()`` live in :mod:`fpe_ref.commands` (installed as the ``fpe``
script), so that installing fpe-ref puts no top-level module named ``cli`` into
site-packages; this file only launches them.
"""

from fpe_ref.commands import fpe, main

__all__ = ["fpe", "main"]

if __name__ == "__main__":
    main()
