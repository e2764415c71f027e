"""Sphinx configuration: Markdown pages (MyST), no network, warnings are errors in CI."""

from __future__ import annotations

import tomllib
from pathlib import Path

_pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())

project = "django-elastic-sessions"
author = "django-elastic-sessions developers"
copyright = "django-elastic-sessions developers"
release = _pyproject["project"]["version"]
version = release

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Headings up to ### get anchors, so pages can link to one setting or check.
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"{project} {release}"
