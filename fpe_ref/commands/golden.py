"""``fpe golden``: export the golden reference bundle and check an implementation against it.

Thin click commands over :mod:`fpe_ref.parity.golden` (the bundle format: docs/golden.md).
"""

from __future__ import annotations

import os
import sys

import click

from fpe_ref.commands import options as opt
from fpe_ref.errors import FPEError


@click.group()
def golden():
    """Golden reference tensors, and the parity check of other implementations against them.

    A bundle (golden.npz + manifest.json, described in docs/golden.md) holds fixed inputs
    and our expected outputs for the MLP forward/backward pass, FPE expansion (Alg. A1),
    20 Adam steps with the penalties of Alg. A3, and the interference metrics.
    """


@golden.command("export")
@click.argument("out_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite a bundle already in DIR.")
def export_cmd(out_dir, force):
    """Write the golden bundle into DIR (deterministic: two exports are byte-identical).

    DIR also gets provenance.json (the commit, the command line, the library versions), which
    is not part of the bundle and not compared by `fpe golden check`.
    """
    from fpe_ref.experiments.outputs import FolderLock, open_output
    from fpe_ref.parity.golden import MANIFEST_NAME, NPZ_NAME, export_bundle

    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FPEError(f"{out_dir} exists and is not a directory")
    with FolderLock(out_dir):
        manifest = export_bundle(out_dir, force=force)
        with open_output(out_dir, {"command": "golden export", "format_version": manifest["format_version"]},
                         replace=True):
            pass
    tensors = manifest["tensors"].values()
    n_in = sum(1 for t in tensors if t["role"] == "input")
    sections = {}
    for name in manifest["cases"]:
        sections.setdefault(name.split("/")[0], []).append(name)
    click.echo(f"golden bundle format {manifest['format_version']} (fpe-ref {manifest['fpe_ref_version']}, "
               f"seed {manifest['seeds']['master']}): {len(manifest['cases'])} cases, "
               f"{n_in} input and {len(manifest['tensors']) - n_in} expected tensors")
    for sec, names in sections.items():
        click.echo(f"  {sec:<8} {len(names):>2} cases: " + ", ".join(n.split("/", 1)[1] for n in names))
    click.echo(f"wrote {out_dir}/{NPZ_NAME} and {out_dir}/{MANIFEST_NAME}")


@golden.command("check")
@click.argument("bundle_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--impl", required=True, metavar="numpy|torch|MODULE:CALLABLE|FILE.py:CALLABLE",
              help="numpy: fpe-ref's own code (exact on the exporting platform). "
                   "torch: the independent PyTorch implementation (extra 'torch'). "
                   "MODULE:CALLABLE or path/to/file.py:CALLABLE: your own implementation, called as "
                   "CALLABLE(config, inputs, dtype, device) once per case and returning a dict of tensors; "
                   "it raises NotImplementedError for a case it does not implement (docs/golden.md, section 8).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the implementation runs (torch, or passed to your callable).")
@opt.dtype("float64", note="of the checked implementation; its tolerances are in the manifest")
@click.option("--only", default=None, help="Check only the tensors whose name contains this text.")
def check_cmd(bundle_dir, impl, device, dtype, only):
    """Recompute every expected tensor of the bundle in DIR from its stored inputs and compare.

    Verifies every stored tensor's shape and SHA-256 first, then prints the max absolute and
    relative error of every tensor (relative to the tensor's largest magnitude), ok, FAIL or
    NOT IMPLEMENTED.

    \b
    Exit status:
      0  every checked tensor is within its tolerance
      1  some tensor fails (whether or not others are not implemented)
      3  no tensor fails, but the implementation does not implement some cases
      2  bad input: no bundle in DIR, an --impl that cannot be loaded, no CUDA device
    """
    from fpe_ref.parity.golden import check_bundle

    report = check_bundle(bundle_dir, impl=impl, device=device, dtype=dtype, only=only)
    for line in report.lines():
        click.echo(line)
    if report.exit_status:
        sys.exit(report.exit_status)
