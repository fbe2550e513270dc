"""Every relative link of README.md and docs/ names a file that exists and, where it names a heading
(#anchor), a heading of that file under GitHub's anchor rule: lower case, punctuation dropped, spaces as hyphens,
-1, -2, ... on repeated headings. Read as text: nothing is rendered."""
import collections
import pathlib
import re

import pytest

from scale_helpers import ROOT

PAGES = [pathlib.Path(ROOT) / "README.md", *sorted((pathlib.Path(ROOT) / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(text):
    """The anchors GitHub gives the headings of a markdown text (fenced code skipped)."""
    found, seen, fenced = set(), collections.Counter(), False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        heading = None if fenced else re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            found.add(slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
            seen[slug] += 1
    return found


def test_anchor_rule_numbers_repeated_headings_and_drops_punctuation():
    text = "# Speed: 3x, measured\n## Runs\n```\n# not a heading\n```\n## Runs\n"
    assert anchors(text) == {"speed-3x-measured", "runs", "runs-1"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_names_an_existing_file_and_heading(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path) if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{page.name}: {broken}"
