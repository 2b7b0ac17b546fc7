"""The README and docs/ tell the truth about the code: their Python runs, and every option they
show for a command is one that command's --help lists."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from compress.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PAGES = {"README.md": README, **{f"docs/{p.name}": p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}}


def _blocks(lang: str) -> list[str]:
    return [b for text in PAGES.values() for b in re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)]


def _subcommand_help() -> dict[str, str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {name: p.format_help() for name, p in sub.choices.items()}


HELP = _subcommand_help()


def _shown_commands() -> list[tuple[str, str]]:
    """(where, command line) for each `compress ...` the README shows: command-table cells and
    lines of shell blocks."""
    found = []
    for row in re.findall(r"^\| `(compress [^`]+)` \|", README, flags=re.M):
        found.append(("command table", row))
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;|\|", line):
                part = part.strip()
                if part.startswith("compress "):
                    found.append(("shell block", part))
    return found


def test_the_readme_shows_commands():
    assert len([w for w, _ in _shown_commands() if w == "command table"]) >= 15


@pytest.mark.parametrize("where, line", _shown_commands(), ids=lambda v: v if len(str(v)) < 60 else str(v)[:60])
def test_every_option_the_readme_shows_exists(where, line):
    words = line.replace("[", " ").replace("]", " ").replace("|", " ").split()
    command = words[1]
    assert command in HELP, f"{where}: `compress {command}` is not a command"
    options = {w.split("=")[0] for w in words[2:] if w.startswith("--")}
    missing = sorted(o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", HELP[command]))
    assert not missing, f"{where}: `compress {command}` has no {missing} (line: {line})"


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_every_python_block_runs(index, monkeypatch, tmp_path):
    """From a fresh folder, as a user's notebook would (what a block writes stays out of the checkout)."""
    monkeypatch.chdir(tmp_path)
    code = _blocks("python")[index]
    exec(compile(code, f"README.md python block {index + 1}", "exec"), {"__name__": "__readme__"})


def test_shell_lines_parse():
    for _, line in _shown_commands():
        shlex.split(line.replace("[", "").replace("]", "").replace("|", " "))


def test_the_readme_is_short_and_links_resolve():
    assert len(README.splitlines()) <= 250
    for page, text in PAGES.items():
        base = (ROOT / page).parent
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if not target.startswith("http"):
                assert (base / target).exists(), f"{page} links to {target}, which does not exist"


def _tables(text: str) -> list[list[str]]:
    """Runs of consecutive lines that start with "|": one Markdown table each."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_the_readme_excerpts_generated_tables_verbatim():
    """A README table whose header is a generated results table is a slice of that file, line for
    line: regenerating the results without updating the excerpt fails here, not in a user's eyes."""
    results = {p.name: p.read_text().splitlines() for p in sorted((ROOT / "docs" / "results").glob("*.md"))}
    excerpts = 0
    for table in _tables(README):
        sources = [name for name, lines in results.items() if table[0] in lines]
        if not sources:
            continue
        excerpts += 1
        assert any(lines[i:i + len(table)] == table for lines in (results[n] for n in sources) for i in range(len(lines))), \
            f"README table {table[0]!r} is not a verbatim slice of docs/results/{sources}"
    assert excerpts >= 1, "the Quickstart shows an excerpt of the main command's final table"
