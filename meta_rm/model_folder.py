"""A model folder prepared once in the cache: written beside its target, marked complete, then renamed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

DONE_MARKER = ".grm-server-complete"


def prepare_folder(target: Path, write: Callable[[Path], None]) -> Path:
    """Return `target`, first running `write(tmp)` into a process-private sibling folder and renaming it
    into place when `target` is not yet complete. A folder is complete once it holds the marker, so an
    interrupted preparation is redone; when another process finishes first, its folder is kept."""
    if (target / DONE_MARKER).is_file():
        return target
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        write(tmp)
        (tmp / DONE_MARKER).write_text("ok\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():  # another process won the race; keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(target)
    return target
