"""The `grm-server` command line: every command; `python -m server.cli` runs it."""

from server.cli.main import app, main

__all__ = ["app", "main"]
