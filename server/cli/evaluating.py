"""What `grm-server eval` and `grm-server reproduce` share: checked options, and one evaluation run over a
running grm-server (`--url`) or the in-process engines, whose failures leave through the CLI's exit codes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import typer

from server.cli.common import fail
from server.core.settings import Settings
from server.evaluation.evaluate import EvalOptions, evaluate
from server.evaluation.formats import FormatError, accepted
from server.evaluation.runner import EvalInterrupted, RunMismatch
from server.evaluation.scorers import HTTPScorer, ScoreFailure, ServiceScorer


@contextlib.contextmanager
def checked_options() -> Iterator[None]:
    """Around parsing the options into `EvalOptions`: an invalid one ends the command (exit 2) before any
    engine starts."""
    try:
        yield
    except ValueError as exc:
        fail(f"invalid option: {exc}")


async def run_evaluation(
    options: EvalOptions, settings: Settings, url: str | None, api_key: str | None
) -> dict[str, Any]:
    """Evaluate through `url` when given, else through engines built from `settings`; results.json's dict."""

    def log(message: str) -> None:
        typer.echo(message, err=True)

    try:
        if url is not None:
            async with httpx.AsyncClient(timeout=httpx.Timeout(900.0, connect=10.0)) as client:
                return await evaluate(HTTPScorer(client, url, api_key), options, log=log)
        from server.core.engines import open_service

        async with open_service(settings) as service:
            return await evaluate(ServiceScorer(service), options, log=log)
    except FormatError as exc:
        fail(f"cannot read {exc}\naccepted formats: {accepted()}")
    except RunMismatch as exc:
        fail(str(exc), 2)
    except ScoreFailure as exc:
        fail(f"the judge is not usable: {exc}", 1)
    except (EvalInterrupted, httpx.HTTPError) as exc:
        fail(f"interrupted: {exc}; completed items are saved, rerun the same command to resume", 1)
