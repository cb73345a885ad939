"""The docs and the code stand alone: no citation of files outside the repository, no machine paths, and
every relative link of README.md and docs/ (anchors included) leads somewhere in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("server", "meta_rm", "voting", "bench", "deploy")

# Design notes kept outside the repository, the folder beside it, and absolute paths of one machine.
OUTSIDE = re.compile(
    r"\bDESIGN(?:\.md)?\b|\bSTYLE\.md\b|\bSTYLE\s*§|(?<![\w-])(?:\.\./)+shared\b|(?<![\w.-])shared/(?:data|design|hooks)\b"
    r"|(?<![\w.])/(?:work|root|home|Users)/"
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def checked_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for folder in CODE_DIRS:
        files.extend(sorted((ROOT / folder).rglob("*.py")))
    return files


def outside_citations(text: str) -> list[str]:
    """Lines of `text` that cite something a user of the repository does not have."""
    return [line.strip() for line in text.splitlines() if OUTSIDE.search(line)]


@pytest.mark.parametrize(
    ("line", "cited"),
    [
        ("Against DESIGN §4 (latency)", True),
        ("see DESIGN.md section 1", True),
        ("the layout rules of STYLE.md", True),
        ("grm-server eval ../shared/data/dev/llmbar.jsonl", True),
        ("from `shared/data/dev`, keeping items", True),
        ("(see `/work/shared/data/dev/MANIFEST.md`)", True),
        ("saved to /root/models/grm", True),
        ("cache in /home/alice/.cache", True),
        ("see docs/design.md, \"Performance targets\"", False),
        ("mounted at /data; the image's HOME is its own", False),
        ("a shared prefix cache (shared/ is not a path here: sharedness)", False),
        ("server/core/shared_items.py and voting/orders.py", False),
        ("the design of the API (lower case is prose)", False),
        ("https://example.org/home/page", False),
    ],
)  # fmt: skip
def test_the_citation_pattern(line: str, cited: bool) -> None:
    assert bool(outside_citations(line)) is cited


def test_docs_and_code_cite_nothing_outside_the_repository() -> None:
    found = {
        str(path.relative_to(ROOT)): lines
        for path in checked_files()
        if (lines := outside_citations(path.read_text(encoding="utf-8")))
    }
    assert found == {}


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for line in markdown.splitlines():
        if m := re.match(r"#{1,6}\s+(.*)", line):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


def test_relative_links_and_their_anchors_resolve() -> None:
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # http(s):, mailto:
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.is_relative_to(ROOT) or not dest.exists():
                broken.append(f"{doc.name}: {target}")
            elif anchor and anchor not in anchors(dest.read_text(encoding="utf-8")):
                broken.append(f"{doc.name}: {target} (no such heading)")
    assert broken == []
