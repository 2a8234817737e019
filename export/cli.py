"""``turnwise export``: the function the CLI calls, with rich progress and a parity summary."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from export.pipeline import ExportOptions, export_bundle, parse_variants


def run_export(checkpoint: Path, out: Path, variants: list[str], *, name: str | None = None,
               version: str | None = None, probe_data: Path | None = None, opset: int | None = None,
               console: Console | None = None, require: list[str] | None = None) -> Path:
    """Export ``checkpoint`` to a verified bundle at ``out``; raises ParityError / ExportError on failure."""
    console = console or Console(stderr=True)
    opts = ExportOptions(variants=parse_variants(variants), name=name, version=version,
                         probe_data=Path(probe_data) if probe_data else None, opset=opset,
                         require=parse_variants(require) if require else ())
    start = time.perf_counter()
    with console.status("exporting", spinner="dots") as status:

        def progress(msg: str) -> None:
            console.log(msg)
            status.update(f"[bold]export[/]: {msg}")

        result = export_bundle(Path(checkpoint), Path(out), opts, progress=progress)

    manifest = result.manifest
    probe = next(iter(manifest["parity"].values()))["probe"]
    probed = (f"{probe['windows']} probe windows" if "windows" in probe else
              f"{probe['dialogues']} probe dialogues, {probe['turns']} turns stepped, {probe['reanchors']} re-anchors")
    table = Table(title=f"{manifest['name']} {manifest['version']}: parity vs PyTorch ({probed})")
    for col in ("variant", "file", "max |Δlogit|", "min label agreement", "measured on", "passed"):
        table.add_column(col)
    for variant, rec in manifest["parity"].items():
        table.add_row(variant, rec["file"], f"{rec['max_abs_diff']:.2e}", f"{rec['min_label_agreement']:.4f}",
                      rec["measured_on"]["provider"], "yes" if rec["passed"] else "NO")
    console.print(table)
    for variant, rej in (manifest.get("rejected_variants") or {}).items():
        console.print(f"[yellow]variant {variant} left out: {rej['error']}[/]")
    console.print(f"preferred variant: {manifest['preferred_variant']} "
                  f"({manifest['preferred_variant_source']})")
    console.print(f"[green]bundle written to {result.path}[/] in {time.perf_counter() - start:.1f}s")
    return result.path
