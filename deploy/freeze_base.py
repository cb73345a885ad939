"""Print `name==version` for every distribution this Python sees: constraints that pin a base image's packages."""

from __future__ import annotations

import importlib.metadata
import re


def pins() -> list[str]:
    """One pin per distribution (the first found on sys.path wins, as for imports), sorted by name."""
    seen: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()
        seen.setdefault(key, f"{key}=={dist.version}")
    return [seen[key] for key in sorted(seen)]


if __name__ == "__main__":
    print("\n".join(pins()))
