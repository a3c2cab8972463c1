"""``gateway sim``: the command line of the provider simulator (registered in cli/main.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ops.sim.config import apply_flags, load_config
from shared.errors import ConfigError


def sim(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(9100, help="Port to bind (0 picks a free one; the ready line names it)."),
    rpm: Optional[int] = typer.Option(None, help="Requests per minute for models not in the file [600]."),  # noqa: UP045
    tpm: Optional[int] = typer.Option(None, help="Tokens per minute for models not in the file [60000]."),  # noqa: UP045
    config: Optional[Path] = typer.Option(None, help="YAML file: models, keys, limits, latency, faults."),  # noqa: UP045
    itpm: Optional[int] = typer.Option(None, help="Anthropic input TPM default [= tpm]."),  # noqa: UP045
    otpm: Optional[int] = typer.Option(None, help="Anthropic output TPM default [= tpm / 5]."),  # noqa: UP045
    latency: Optional[str] = typer.Option(None, help="'zero' or 'realistic' for every model."),  # noqa: UP045
) -> None:
    """Run the provider simulator: OpenAI and Anthropic APIs with their rate limits and faults."""
    from ops.sim.server import serve

    if latency not in (None, "zero", "realistic"):
        raise typer.BadParameter("--latency must be 'zero' or 'realistic'")
    try:
        settings = apply_flags(load_config(config), rpm=rpm, tpm=tpm, itpm=itpm, otpm=otpm,
                               latency=latency)  # type: ignore[arg-type]
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    serve(settings, host, port)
