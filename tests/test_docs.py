"""Docs stay true: every ```python block in README.md and docs/ runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for path in DOC_FILES:
        if not path.exists():
            continue
        for index, match in enumerate(BLOCK.finditer(path.read_text())):
            found.append((f"{path.relative_to(ROOT)}#{index + 1}", match.group(1)))
    return found


BLOCKS = _blocks()


def test_docs_have_runnable_examples() -> None:
    """The docs show code, and it is checked (this suite would be empty otherwise)."""
    assert len(BLOCKS) >= 3


@pytest.fixture(scope="module")
def reader_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every example, as a reader who runs them all in one place has."""
    return tmp_path_factory.mktemp("reader")


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_python_block_runs(where: str, code: str, reader_folder: Path) -> None:
    """The block runs to completion with only the library installed, twice, in the folder
    where the README's and every earlier page's examples ran too: no example trips over
    another's journal or run ids (two once shared `runs.db` and `cats-1` and failed with a
    misleading "return annotation changed"), and each works on a journal it already wrote."""
    script = reader_folder / "block.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNAL_")}
    for sitting in (1, 2):
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=reader_folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, f"{where}, run {sitting}:\n{proc.stdout}\n{proc.stderr}"


def test_examples_that_start_a_run_show_the_main_guard() -> None:
    """`journal replay --entry file.py:fn` imports the file: an example that starts its run at
    import could not be replayed from the CLI, so every one shows the guard."""
    unguarded = [
        where
        for where, code in BLOCKS
        if "asyncio.run(" in code and 'if __name__ == "__main__":' not in code
    ]
    assert unguarded == []


LINK = re.compile(r"\]\(([\w./-]+\.md)?(?:#([\w-]+))?\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_between_docs_lead_somewhere() -> None:
    """Every link to a doc page (and to a heading in it) names a page and heading that exist."""
    broken = []
    for path in DOC_FILES:
        for target, anchor in LINK.findall(path.read_text()):
            page = (path.parent / target).resolve() if target else path
            if not page.exists():
                broken.append(f"{path.name}: {target}")
            elif anchor and anchor not in _anchors(page):
                broken.append(f"{path.name}: {target}#{anchor}")
    assert not broken, broken


RECIPE_MARK = re.compile(r"^<!-- recipe: (\S+) (\S+) -->\n```py\n(.*?)^```", re.S | re.M)
RECIPE_REGION = r"^[ \t]*# recipe: {name}\n(.*?)^[ \t]*# end recipe: {name}\n"


def _recipe(path: Path, name: str) -> str:
    """The code between `# recipe: NAME` and `# end recipe: NAME` in `path`, dedented."""
    found = re.search(RECIPE_REGION.format(name=re.escape(name)), path.read_text(), re.S | re.M)
    assert found, f"{path.relative_to(ROOT)} has no `# recipe: {name}` region"
    return textwrap.dedent(found.group(1)).strip("\n") + "\n"


def test_framework_recipes_are_the_code_the_tests_run() -> None:
    """docs/frameworks.md shows each recipe as the tested drivers hold it: every ```py block
    there follows `<!-- recipe: PATH NAME -->` and equals that region of PATH (those blocks
    need a framework and the local server, so test_python_block_runs does not run them)."""
    page = (ROOT / "docs" / "frameworks.md").read_text()
    marked = RECIPE_MARK.findall(page)
    assert len(marked) == page.count("```py\n") and len(marked) >= 8
    for path, name, shown in marked:
        assert shown == _recipe(ROOT / path, name), f"docs/frameworks.md: {path} {name}"
