"""Shared by the CLI commands: settings from the environment with the command's options on top."""

from __future__ import annotations

from typing import Any

import typer

from server.core.settings import Settings


def load_settings(overrides: dict[str, Any]) -> Settings:
    """Settings from the environment, with the CLI's options on top; a bad value exits with code 2."""
    try:
        return Settings().with_overrides(overrides)
    except ValueError as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
