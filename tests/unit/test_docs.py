"""The documents a user reads: every measured table says which command produced it, and every link resolves."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
GENERATED = DOCS / "results"
COMMAND = re.compile(r"python -m dev\.(bench|harness)\.[a-z_]+")


def sections(text: str) -> list[str]:
    """The text cut at each second-level heading (a section keeps its third-level subsections)."""
    return re.split(r"^(?=## )", text, flags=re.MULTILINE)


def measured_blocks(section: str) -> list[str]:
    """Fenced blocks that are output rather than a command, and Markdown tables."""
    fences = re.findall(r"^```(\w*)\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    tables = re.findall(r"(?:^\|.*\n)+", section, flags=re.MULTILINE)
    return [body for lang, body in fences if lang not in ("bash", "sh")] + tables


def test_every_table_in_the_results_names_the_command_that_produced_it():
    pages = [DOCS / "results.md", *sorted(GENERATED.glob("*.md"))]
    checked = 0
    for page in pages:
        for section in sections(page.read_text()):
            blocks = measured_blocks(section)
            if blocks:
                checked += len(blocks)
                heading = section.splitlines()[0]
                assert COMMAND.search(section), f"{page.name}: {heading!r} shows measurements but names no command"
    assert checked >= 5  # the pages do hold measurements: the check above ran


def test_the_results_page_pastes_no_output_a_bench_can_write_itself():
    """Bench output lives in the files the benches write (docs/results/); the page itself keeps only output that
    cannot be rerun without a GPU."""
    fences = re.findall(r"^```(\w*)\n(.*?)^```", (DOCS / "results.md").read_text(), flags=re.MULTILINE | re.DOTALL)
    pasted = [body for lang, body in fences if lang not in ("bash", "sh")]
    assert all("device cuda" in body for body in pasted), [body[:80] for body in pasted if "device cuda" not in body]


@pytest.mark.parametrize("page", sorted(GENERATED.glob("*.md")), ids=lambda p: p.name)
def test_generated_results_say_where_they_come_from(page):
    text = page.read_text()
    for field in ("- command: `python -m ", "- date: ", "- machine: "):
        assert field in text, f"{page.name} lacks {field.strip()!r}"
    assert "edits here are overwritten" in text
    # and the results page leads to it
    assert f"results/{page.name}" in (DOCS / "results.md").read_text()


def test_every_relative_link_in_the_documents_resolves():
    pages = [ROOT / "README.md", *DOCS.glob("*.md"), *GENERATED.glob("*.md")]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_documents_speak_to_users_not_of_the_work_behind_them():
    words = re.compile(r"\bissue \d+|\bsession\b|lent machine|\d-core CPU", re.IGNORECASE)
    pages = [ROOT / "README.md", *DOCS.glob("*.md"), *GENERATED.glob("*.md")]
    found = [f"{page.relative_to(ROOT)}: {m.group(0)!r}" for page in pages for m in words.finditer(page.read_text())]
    assert not found, found


def test_the_code_map_names_every_module():
    """docs/development.md maps the code: a module added without a line there fails here."""
    text = (DOCS / "development.md").read_text()
    named = set(re.findall(r"`([^`\s]+)`", text))
    named |= {Path(name).name for name in named}
    files = [path for pattern in ("mrti/**/*.py", "nodes/**/*.py", "dev/**/*.py", "dev/*.sh", "scripts/*.sh", "js/*.*")
             for path in ROOT.glob(pattern) if path.name != "__init__.py" and "__pycache__" not in path.parts]
    assert len(files) > 40
    unnamed = sorted(str(path.relative_to(ROOT)) for path in files if path.name not in named)
    assert not unnamed, f"docs/development.md does not name: {unnamed}"
