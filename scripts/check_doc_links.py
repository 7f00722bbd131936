"""Check the relative links of README.md and docs/*.md: each target exists, each #anchor a heading.

`mkdocs build --strict` checks the links between the docs pages but not README.md, which lives
outside docs/. This checks README.md's links into docs/, and that every anchor used anywhere is a
heading id both as mkdocs makes them (Python-Markdown's toc) and as GitHub does, so the links work
on either. Usage: python scripts/check_doc_links.py  (exit 1, one line per broken link)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from markdown.extensions.toc import slugify  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, inline code removed."""
    lines, fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence:
            lines.append(re.sub(r"`[^`]*`", "``", line))
    return lines


def anchors(page: Path) -> set[str]:
    """The heading ids of a page that mkdocs and GitHub agree on."""
    mk: set[str] = set()
    gh: set[str] = set()
    for line in prose(page.read_text(encoding="utf-8")):
        m = re.match(r"#{1,6} +(.*?) *#*$", line)
        if not m:
            continue
        title = re.sub(r"[`*]", "", m.group(1))
        mk.add(slugify(title, "-"))
        gh.add(re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-"))
    return mk & gh


def broken(page: Path) -> list[str]:
    errors = []
    for line in prose(page.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            name = f"{page.relative_to(ROOT)}: link {target!r}"
            if not dest.exists():
                errors.append(f"{name}: no such file {dest.relative_to(ROOT)}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                where = dest.relative_to(ROOT)
                errors.append(f"{name}: no heading with the id #{anchor} in {where}")
    return errors


def main() -> int:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    errors = [e for page in pages for e in broken(page)]
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
