"""The `grm-server` command line: score, serve, meta-rm, eval, reproduce, train."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import sys
from typing import Annotated, Any

import typer

from server.cli.common import MetaRMOption, cli_errors, load_settings, meta_rm_overrides
from server.cli.eval import eval_command
from server.cli.meta import meta_app
from server.cli.reproduce import reproduce_command
from server.cli.train import train_app
from server.core.settings import Backend, Settings
from server.http.protocol import ScoreItem, ScoreParams, ScoreResponse

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Inference-time scaling reward server (DeepSeek-GRM, SPCT)."
)


app.add_typer(meta_app, name="meta-rm")
app.add_typer(train_app, name="train")
app.command("eval")(eval_command)
app.command("reproduce")(reproduce_command)


@app.callback()
def _root() -> None:
    """Inference-time scaling reward server (DeepSeek-GRM, SPCT)."""


def _table(result: ScoreResponse, responses: list[str]) -> str:
    lines = [
        f"model {result.model}  k={result.k}  k_meta={result.k_meta}  valid={result.valid}  kept={result.kept}  seed={result.seed}",
        f"{'#':>3}  {'reward':>6}  {'mean':>5}  response",
    ]
    for i, text in enumerate(responses):
        mark = "*" if i == result.best else " "
        preview = text.replace("\n", " ")
        preview = preview[:60] + ("..." if len(preview) > 60 else "")
        lines.append(f"{i:>3}{mark} {result.rewards[i]:>6}  {result.scores[i]:>5.2f}  {preview}")
    lines.append(
        f"best: response {result.best}   tokens: {result.usage.prompt_tokens} prompt + {result.usage.completion_tokens} completion in {result.usage.engine_calls} engine calls"
    )
    return "\n".join(lines)


@app.command()
def score(
    query: Annotated[str, typer.Option(help="the user's query")],
    response: Annotated[list[str], typer.Option("--response", "-r", help="a candidate response (repeat)")],
    k: Annotated[int | None, typer.Option(help="judgments to sample")] = None,
    k_meta: Annotated[
        int | None, typer.Option("--k-meta", help="judgments kept by the Meta RM (0 = plain voting)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed for orders, sampling, tie-breaks")] = None,
    temperature: Annotated[float | None, typer.Option(help="sampling temperature")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="token budget per judgment")] = None,
    backend: Annotated[Backend | None, typer.Option(help="vllm (in-process) or openai (remote server)")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible base URL")] = None,
    model: Annotated[str | None, typer.Option(help="GRM model path or name (default: embedded CPU model)")] = None,
    samples: Annotated[bool, typer.Option("--samples", help="include every judgment in --json output")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the /score response body")] = False,
) -> None:
    """Judge RESPONSES to QUERY once and print the voted rewards."""
    with cli_errors(as_json=as_json):
        settings = load_settings(
            {"generator.backend": backend, "generator.base_url": base_url, "generator.model": model}
        )
        item = ScoreItem(query=query, responses=response)
        params = ScoreParams(
            k=k, k_meta=k_meta, seed=seed, temperature=temperature, max_tokens=max_tokens, return_samples=samples
        )
        result = asyncio.run(_score_once(settings, item, params))
    body = result.model_dump(mode="json")
    typer.echo(json.dumps(body, indent=2) if as_json else _table(result, response))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="bind port (default 8000)")] = None,
    model: Annotated[str | None, typer.Option(help="GRM model path or name (default: embedded CPU model)")] = None,
    backend: Annotated[Backend | None, typer.Option(help="vllm (in-process) or openai (remote server)")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible base URL of the GRM")] = None,
    api_key: Annotated[
        list[str] | None, typer.Option("--api-key", help="accepted Bearer key (repeat); default: no auth")
    ] = None,
    meta_rm: MetaRMOption = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn/app log level")] = "info",
) -> None:
    """Serve the reward API (uvicorn); with no model, the embedded CPU default."""
    import uvicorn

    from server.http.app import create_app
    from server.http.connections import uvicorn_config

    overrides: dict[str, Any] = {
        "server.host": host,
        "server.port": port,
        "generator.model": model,
        "generator.backend": backend,
        "generator.base_url": base_url,
        "server.api_keys": api_key or None,
        **meta_rm_overrides(meta_rm),
    }
    with cli_errors():
        settings = load_settings(overrides)
    logging.getLogger().setLevel(log_level.upper())
    config = uvicorn_config(
        create_app(settings),
        settings.server,
        log_level=log_level,
        log_config=uvicorn_log_config(),
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging setup, with query strings kept out of its access log."""
    import uvicorn.config

    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["no_query"] = {"()": "server.http.routes.edge.NoQueryString"}
    config["loggers"]["uvicorn.access"]["filters"] = ["no_query"]
    return config


async def _score_once(settings: Settings, item: ScoreItem, params: ScoreParams) -> ScoreResponse:
    from server.core.engines import build_planner, open_service

    request = params.judge_request(item.conversation(), item.responses)
    plan = build_planner(settings).plan(request)  # fail before loading engines
    async with open_service(settings) as service:
        result = await service.judge(request, plan)
    return ScoreResponse.from_result(result, with_samples=params.return_samples)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
