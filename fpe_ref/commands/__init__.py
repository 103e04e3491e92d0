"""The ``fpe`` command: a thin click group; every command builds a config and calls fpe_ref / theory.

One module per group of commands: :mod:`~fpe_ref.commands.reproduce` (the paper's
experiments), :mod:`~fpe_ref.commands.sweep` (the Sec. 3.2 grids and ``fpe report``),
:mod:`~fpe_ref.commands.study` (the study of the paper's silent choices),
:mod:`~fpe_ref.commands.golden`, :mod:`~fpe_ref.commands.bench` and :mod:`~fpe_ref.commands.theory`;
the options they share are defined once, in :mod:`~fpe_ref.commands.options`. Bad input
raises ``fpe_ref.errors.FPEError``; :func:`main` prints it as one line and exits 2.
"""

from __future__ import annotations

import sys

import click

from fpe_ref.commands import bench, golden, reproduce, study, sweep, theory
from fpe_ref.errors import FPEError


@click.group()
@click.version_option(package_name="fpe-ref")
def fpe():
    """fpe-ref: Fixed Parameter Expansion (Kong, Subramanian et al., 2025), reference implementation.

    Split every hidden neuron of a trained dense MLP into alpha children with disjoint
    inputs, duplicate the outgoing weights, prune the smallest weights back to the parent's
    non-zero count, and keep training. Wider, sparser, same budget.
    """


# The package's names for the submodules stay the modules (fpe_ref.commands.sweep is the
# module, sweep.sweep its group): no command object shadows a submodule of the same name.
fpe.add_command(reproduce.reproduce)
fpe.add_command(bench.bench_cmd)
fpe.add_command(theory.theory)
fpe.add_command(sweep.sweep)
fpe.add_command(sweep.report)
fpe.add_command(golden.golden)
fpe.add_command(study.study)


def main():
    try:
        rv = fpe.main(standalone_mode=False)
    except FPEError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # an output path that cannot be created or written, a full disk, ...
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        click.echo(f"Error: cannot read or write a file{where}: {exc.strerror or exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)  # standalone_mode=False returns ctx.exit codes


if __name__ == "__main__":
    main()
