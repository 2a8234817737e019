"""``turnwise bundle``: maintain model bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

bundle_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Maintain model bundles.")


@bundle_app.command("seal")
def bundle_seal(path: Annotated[Path, typer.Argument(help="bundle directory (holds bundle.json)")]) -> None:
    """Re-seal a bundle after a deliberate edit of bundle.json: checks every other file against its
    checksums, then rewrites SHA256SUMS over bundle.json as it is now (serving refuses an unsealed edit)."""
    from bundle.manifest import seal

    typer.echo(f"sealed {seal(path)}")
