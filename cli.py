"""The ``fpe`` command: a thin click group; every command builds a config and calls fpe_ref / theory.

Bad input raises ``fpe_ref.errors.FPEError``; ``main`` prints it as one line and exits 2.
"""

from __future__ import annotations

import sys

import click

from fpe_ref.errors import FPEError


@click.group()
@click.version_option(package_name="fpe-ref")
def fpe():
    """fpe-ref: Fixed Parameter Expansion (Kong, Subramanian et al., 2025), reference implementation.

    Split every hidden neuron of a trained dense MLP into alpha children with disjoint
    inputs, duplicate the outgoing weights, prune the smallest weights back to the parent's
    non-zero count, and keep training. Wider, sparser, same budget.
    """


def _register_subcommands():
    """Attach command groups that live next to the code they drive."""
    try:
        from theory.cli import theory
    except ImportError:  # theory/ not present yet
        return
    fpe.add_command(theory)


_register_subcommands()


def main():
    try:
        fpe.main(standalone_mode=False)
    except FPEError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
