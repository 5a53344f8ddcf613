"""The command line's ``export`` subcommand: a model file as a bioimage.io model package."""

from __future__ import annotations

import argparse


def add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export MODEL.pt --output NAME.zip`` and its metadata flags to ``subparsers``."""
    e = subparsers.add_parser("export", help="write a model as a bioimage.io model package (.zip)")
    e.add_argument("model", nargs="?", help="model file (.pt); default: the bundled model")
    e.add_argument("--output", required=True, help="the package to write, NAME.zip")
    e.add_argument("--name", help="package name (default: e.g. 'napari-tiled-unet 2D U-Net')")
    e.add_argument("--description", help="one or two sentences (default: from the model)")
    e.add_argument(
        "--author", action="append", help="author name; repeat for several (default: login)"
    )
    e.add_argument("--license", help="SPDX licence id (default: CC-BY-4.0)")
    e.add_argument(
        "--cite",
        action="append",
        default=[],
        metavar="TEXT|DOI_OR_URL",
        help="a further citation (the U-Net paper and this package are always cited)",
    )
    e.add_argument(
        "--sample-image",
        help="TIFF to cut the test tensors and cover from (default: the bundled nuclei "
        "image for the bundled model, else a synthetic image)",
    )
    e.set_defaults(run=_export)


def _export(args: argparse.Namespace) -> None:
    from napari_tiled_unet.bioimageio.export import export_model_file

    path = export_model_file(
        args.model,
        args.output,
        sample_image=args.sample_image,
        cite=args.cite,
        name=args.name,
        description=args.description,
        authors=args.author,
        license=args.license,
    )
    print(f"wrote {path}; check it with: bioimageio test {path}")
