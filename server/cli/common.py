"""Shared by the CLI commands: settings with the command's options on top, the `--meta-rm` option, and the
one error helper every command leaves through (2 = bad input, 1 = a failure while running)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Annotated, Any, NoReturn

import typer

from meta_rm.errors import MetaRMError
from server.core.errors import ConfigurationError, GRMError, from_meta_rm
from server.core.settings import Settings

MetaRMOption = Annotated[
    str | None, typer.Option("--meta-rm", help="Meta RM: a model path (transformers), 'embedded', or 'none'")
]


class CLIError(Exception):
    """Leave the command with `message` on stderr and exit `code` (2: bad input or options, 1: failure)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def fail(message: str, code: int = 2) -> NoReturn:
    """Stop the command now: `message` on stderr, exit `code`."""
    raise CLIError(message, code)


@contextlib.contextmanager
def cli_errors(*, as_json: bool = False) -> Iterator[None]:
    """The one CLI error boundary. A GRMError or Meta RM error prints `error (type): message` (or, with
    --json, the API's error body on stdout) and exits 2 for a 4xx or bad configuration, 1 otherwise; `ValueError` is bad input (2), `OSError` a failure (1)."""
    try:
        yield
    except CLIError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(exc.code) from exc
    except (GRMError, MetaRMError) as exc:
        err = from_meta_rm(exc)
        if as_json:
            typer.echo(json.dumps(err.to_body()))
        else:
            typer.echo(f"error ({err.type}): {err.message}", err=True)
        raise typer.Exit(2 if err.status < 500 or isinstance(err, ConfigurationError) else 1) from exc
    except ValueError as exc:
        typer.echo(f"invalid input: {exc}", err=True)
        raise typer.Exit(2) from exc
    except OSError as exc:
        typer.echo(f"error ({type(exc).__name__}): {exc}", err=True)
        raise typer.Exit(1) from exc


def load_settings(overrides: dict[str, Any]) -> Settings:
    """Settings from the environment, with the CLI's options on top; a bad value, or a tree that could not
    serve (e.g. a judgment budget over `judging.max_max_tokens`), is a CLIError (exit 2)."""
    from server.core.engines import build_planner

    try:
        settings = Settings().with_overrides(overrides)
    except ValueError as exc:
        raise CLIError(f"invalid settings: {exc}") from exc
    try:
        build_planner(settings)
    except ConfigurationError as exc:
        raise CLIError(f"invalid settings: {exc.message}") from exc
    return settings


def meta_rm_overrides(meta_rm: str | None) -> dict[str, Any]:
    """The one `--meta-rm` parser: 'none', 'embedded', or a model path (the transformers backend)."""
    if meta_rm is None:
        return {}
    choice = meta_rm.lower()
    if choice in ("none", "embedded"):
        return {"meta_rm.backend": choice}
    return {"meta_rm.backend": "hf", "meta_rm.model": meta_rm}
