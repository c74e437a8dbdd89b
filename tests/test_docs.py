"""The documentation stays true to the tree: the README's repository table
names every package and tool (and nothing that is gone), and every relative
link in README.md and docs/*.md points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# [text](target) and ![alt](target); the target ends at whitespace or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_FENCE = re.compile(r"^(```|~~~)")


def _repository_table() -> list[str]:
    """The paths in the first column of the README's "## Repository" table."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "## Repository")
    paths: list[str] = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        if not line.startswith("|"):
            continue
        first = line.strip().strip("|").split("|")[0].strip()
        m = re.fullmatch(r"`([^`]+)`", first)
        if m:
            paths.append(m.group(1))
    return paths


def _links(path: Path) -> list[str]:
    """Every link target in ``path``, outside fenced code blocks."""
    targets: list[str] = []
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if CODE_FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if fenced:
            continue
        line = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
        targets.extend(m.group(1) for m in LINK.finditer(line))
    return targets


def _documents() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def test_repository_table_is_not_empty() -> None:
    assert len(_repository_table()) >= 5


def test_repository_table_names_every_package_and_tool() -> None:
    named = {p.rstrip("/") for p in _repository_table()}
    packages = sorted(d.relative_to(ROOT).as_posix() for d in (ROOT / "realfork").iterdir()
                      if d.is_dir() and (d / "__init__.py").exists())
    tools = sorted(f.relative_to(ROOT).as_posix() for f in (ROOT / "tools").iterdir()
                   if f.is_file())
    assert packages, "no package directory found under realfork/"
    missing = [p for p in packages + tools if p not in named]
    assert not missing, f"README's repository table does not mention {missing}"


def test_repository_table_paths_exist() -> None:
    gone = [p for p in _repository_table() if not (ROOT / p).exists()]
    assert not gone, f"README's repository table names paths that do not exist: {gone}"


@pytest.mark.parametrize("doc", _documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_files(doc: Path) -> None:
    broken = []
    for target in _links(doc):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue  # an absolute URL (http:, mailto:) or a link within the page
        file_part = target.split("#", 1)[0]
        if not (doc.parent / file_part).exists():
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)}: links to missing files: {broken}"


def test_documents_have_links_checked() -> None:
    """The link check sees the README's links into docs/ (guards the regex)."""
    assert any(t.startswith("docs/kernel.md") for t in _links(README))
