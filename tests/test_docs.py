"""The docs and the README say what the code does: settings, check ids, commands."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from elastic_sessions import checks
from elastic_sessions.conf import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
COMMANDS = ROOT / "elastic_sessions" / "management" / "commands"

# "### `KEY: type`" followed, before the next heading, by "Default: `<python literal>`".
SETTING_HEADING = re.compile(r"^#{2,4} `?([A-Z][A-Z0-9_]*): ([^`\n]+?)`?\s*$", re.MULTILINE)
DEFAULT_LINE = re.compile(r"^Default: `([^`]+)`", re.MULTILINE)
CHECK_ID = re.compile(r"elastic_sessions\.[EW]\d{3}")
# "| `KEY` | `<python literal>` | ..." in the README's configuration table.
README_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| `([^`]+)` \|", re.MULTILINE)
TYPES: dict[str, type] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list[str]": list,
}


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def documented_settings() -> dict[str, tuple[str, str]]:
    """Each setting heading of docs/configuration.md: key -> (type, section text)."""
    text = read(DOCS / "configuration.md")
    found: dict[str, tuple[str, str]] = {}
    for match in SETTING_HEADING.finditer(text):
        next_heading = re.compile(r"^#", re.MULTILINE).search(text, match.end())
        section = text[match.end() : next_heading.start() if next_heading else len(text)]
        found[match.group(1)] = (match.group(2).strip(), section)
    return found


def code_check_ids() -> set[str]:
    return {
        value
        for name, value in vars(checks).items()
        if re.fullmatch(r"[EW]\d{3}", name) and isinstance(value, str)
    }


def command_names() -> list[str]:
    return sorted(path.stem for path in COMMANDS.glob("*.py") if not path.stem.startswith("_"))


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_every_setting_has_a_typed_heading_and_its_default(key):
    """Each ELASTIC_SESSIONS key has a `KEY: type` heading whose stated default is the code's."""
    settings = documented_settings()
    assert key in settings, f"docs/configuration.md has no heading '{key}: type'"
    type_text, section = settings[key]
    default = DEFAULT_LINE.search(section)
    assert default, f"the section of {key} states no 'Default: `...`'"
    assert ast.literal_eval(default.group(1)) == DEFAULTS[key]
    allowed = [part.strip() for part in type_text.split("|")]
    assert all(part in TYPES or part == "None" for part in allowed), type_text
    value = DEFAULTS[key]
    fits = (value is None and "None" in allowed) or any(
        type(value) is TYPES[part] for part in allowed if part in TYPES
    )
    assert fits, f"the default {value!r} of {key} is not a {type_text}"


def test_no_documented_setting_is_unknown_to_the_code():
    """Every setting heading in docs/configuration.md names a key of conf.DEFAULTS."""
    assert set(documented_settings()) <= set(DEFAULTS)


def test_readme_table_lists_every_setting_with_its_default():
    """The README's configuration table has one row per key, with the code's default."""
    rows = dict(README_ROW.findall(read(ROOT / "README.md")))
    assert set(rows) == set(DEFAULTS)
    for key, default in rows.items():
        # A "|" in a table cell is written "\|", even inside backticks (GFM).
        assert ast.literal_eval(default.replace("\\|", "|")) == DEFAULTS[key], key


def test_every_check_id_is_documented():
    """Each check id constant of elastic_sessions/checks.py has its heading in docs/checks.md."""
    text = read(DOCS / "checks.md")
    ids = code_check_ids()
    assert ids, "no E0xx/W0xx constants found in elastic_sessions/checks.py"
    missing = sorted(check_id for check_id in ids if f"### `{check_id}`" not in text)
    assert not missing, f"docs/checks.md lacks {missing}"


def test_no_documented_check_id_is_absent_from_the_code():
    """No page of the docs, nor the README, names a check id the code does not have."""
    pages = [*DOCS.glob("*.md"), ROOT / "README.md"]
    mentioned = {check_id for page in pages for check_id in CHECK_ID.findall(read(page))}
    assert mentioned - code_check_ids() == set()


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    """The README shows `./dev demo` and `./dev test`, and .ci/run calls `./dev test`."""
    readme = read(ROOT / "README.md")
    assert "./dev demo" in readme
    assert "./dev test" in readme
    ci_commands = [
        line.strip()
        for line in read(ROOT / ".ci" / "run").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert any(re.search(r"(^|\s)\./dev test(\s|$)", line) for line in ci_commands)


def test_every_management_command_is_documented():
    """Each command under elastic_sessions/management/commands is named in docs/operations.md."""
    text = read(DOCS / "operations.md")
    missing = [name for name in command_names() if f"`{name}`" not in text]
    assert not missing, f"docs/operations.md does not name {missing}"


def test_no_documented_command_is_absent_from_the_code():
    """Every command heading in docs/operations.md names a command that exists."""
    text = read(DOCS / "operations.md")
    headings = re.findall(r"^### `([a-z_]+)`\s*$", text, re.MULTILINE)
    assert set(headings) <= set(command_names())
