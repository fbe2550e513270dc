"""Every relative link of README.md, docs/ and data/README.md names a file that exists and, where it names a heading
(#anchor), a heading of that file under GitHub's anchor rule: lower case, punctuation dropped, spaces as hyphens,
-1, -2, ... on repeated headings; and every code fence closes where it should. Read as text: nothing is rendered."""
import collections
import pathlib
import re

import pytest

from scale_helpers import ROOT

PAGES = [pathlib.Path(ROOT) / "README.md", *sorted((pathlib.Path(ROOT) / "docs").glob("*.md")),
         pathlib.Path(ROOT) / "data" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def outside_fences(text):
    """(line number, line) of the lines outside fenced code, by CommonMark's rule: a fence opens on ``` with or
    without an info string (```bash) and closes only on a bare ```; raises if a fence is never closed or holds a
    `## heading`, the sign of a closing fence gone missing."""
    opened = None
    for number, line in enumerate(text.splitlines(), 1):
        if opened is None and line.startswith("```"):
            opened = number
        elif opened is not None and line.strip() == "```":
            opened = None
        elif opened is not None:
            assert not re.match(r"#{2,6} ", line), \
                f"line {number} is a heading inside the fence opened on line {opened}: a closing ``` is missing"
        else:
            yield number, line
    assert opened is None, f"the fence opened on line {opened} is never closed"


def anchors(text):
    """The anchors GitHub gives the headings of a markdown text."""
    found, seen = set(), collections.Counter()
    for _, line in outside_fences(text):
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            found.add(slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
            seen[slug] += 1
    return found


def test_anchor_rule_numbers_repeated_headings_and_drops_punctuation():
    text = "# Speed: 3x, measured\n## Runs\n```bash\n# not a heading\n```\n## Runs\n"
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


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_code_fence_is_closed(page):
    """An unclosed fence turns the rest of a page, headings included, into one code block; ```bash where a
    bare ``` should close one does that too."""
    list(outside_fences(page.read_text()))


def test_fence_rule_reads_an_info_string_as_an_opener_only():
    text = "```bash\nrun\n```bash\nmore\n```\n## After\n"
    assert [line for _, line in outside_fences(text)] == ["## After"]
    with pytest.raises(AssertionError, match="line 1 is never closed"):
        list(outside_fences("```bash\nrun\n```bash\n"))
    with pytest.raises(AssertionError, match="line 3 is a heading inside the fence opened on line 1"):
        list(outside_fences("```bash\nrun\n## Next section\n```\n"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_table_row_has_as_many_cells_as_its_header(page):
    """A row with a cell too few shifts every later cell under the wrong column."""
    def cells(row):
        return len(re.split(r"(?<!\\)\|", row.strip().strip("|")))
    lines, header, bad = list(outside_fences(page.read_text())), None, []
    for (number, line), (_, after) in zip(lines, lines[1:] + [(0, "")]):
        if not line.startswith("|"):
            header = None
        elif header is None and re.fullmatch(r"\|[\s\-:|]+\|", after.strip()):
            header = cells(line)
        elif header is not None and not re.fullmatch(r"\|[\s\-:|]+\|", line.strip()) and cells(line) != header:
            bad.append(f"line {number}: {cells(line)} cells under a header of {header}")
    assert not bad, f"{page.name}: {bad}"


def tree_paths(text):
    """The paths a ```text tree (├── / └── lines, four columns a level; 'a.py, b.py' on one line) lists."""
    listed, folders = set(), []
    for line in text.split("```text", 1)[1].split("```", 1)[0].splitlines():
        found = re.match(r"^((?:│   |    )*)[├└]── (.*)$", line)
        if not found:
            continue
        folders = folders[: len(found.group(1)) // 4]
        for name in re.split(r"\s{2,}", found.group(2).strip())[0].split(","):
            if name.strip().endswith("/"):
                folders.append(name.strip())
            else:
                listed.add("".join(folders) + name.strip())
    return listed


def test_the_layout_page_names_every_source_file_in_its_folder():
    """docs/layout.md's tree is where a reader finds a file's job: every tracked source file outside tests/ is
    listed there under its own folder (a package's __init__.py aside)."""
    import subprocess
    # safe.directory: a checkout owned by another user than the tests' (a container's root) is still listed
    files = subprocess.run(["git", "-c", f"safe.directory={ROOT}", "ls-files", "*.py", "*.sh"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    listed = tree_paths((pathlib.Path(ROOT) / "docs" / "layout.md").read_text())
    missing = [f for f in files if not f.startswith("tests/") and not f.endswith("__init__.py") and f not in listed]
    assert files and not missing, missing
    tree = "```text\n├── data/\n│   └── prepare.py   x\n└── tools/\n```"
    assert tree_paths(tree) == {"data/prepare.py"}


@pytest.mark.parametrize("module", [
    "experiments.ablation", "experiments.label_fraction", "experiments.mask_ratio", "experiments.model_size",
    "experiments.pretrain_fraction", "experiments.transfer", "tools.baselines", "tools.encode",
    "tools.fineall_margin", "tools.pooling", "tools.subset", "tools.summarize", "visualize"])
def test_every_commands_help_gives_its_whole_first_paragraph(module, capsys, monkeypatch):
    """--help describes the command by its module doc's first paragraph, whole (not its first line, cut
    mid-sentence)."""
    import importlib
    monkeypatch.setenv("COLUMNS", "10000")   # argparse wraps at the terminal's width, and breaks words at hyphens
    mod = importlib.import_module(module)
    with pytest.raises(SystemExit):
        mod.main(["--help"])
    first = " ".join(mod.__doc__.split("\n\n")[0].split())
    assert first in " ".join(capsys.readouterr().out.split())
