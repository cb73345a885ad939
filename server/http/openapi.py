"""The OpenAPI document as served: the one error body instead of FastAPI's 422, the configured limits
filled in, and the Bearer scheme on the protected routes when API keys are set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from server.core.settings import Settings
from server.http.protocol import CONFIGURED
from server.http.routes.deps import REALM, KeyedRoute


def setting(settings: Settings, path: str) -> Any:
    """The value of a dotted settings path (`judging.max_k`)."""
    node: Any = settings
    for part in path.split("."):
        node = getattr(node, part)
    return node


def fill_configured(node: Any, settings: Settings) -> None:
    """Every `x-configured-by: {keyword: setting}` in the schema gets `keyword: <that setting's value>`."""
    if isinstance(node, dict):
        for keyword, path in node.get(CONFIGURED, {}).items():
            node[keyword] = setting(settings, path)
        for value in node.values():
            fill_configured(value, settings)
    elif isinstance(node, list):
        for value in node:
            fill_configured(value, settings)


def served_openapi(app: FastAPI, settings: Settings) -> Callable[[], dict[str, Any]]:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)  # validation errors are 400s
            components = schema.setdefault("components", {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.get("schemas", {}).pop(name, None)
            fill_configured(schema, settings)
            if settings.server.api_keys:
                components["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer", "description": f"an API key of {REALM}"}
                }
                for route in app.routes:
                    if isinstance(route, KeyedRoute) and route.include_in_schema:
                        for method in route.methods:
                            schema["paths"][route.path][method.lower()]["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi
