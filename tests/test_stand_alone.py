"""The repository stands alone: no file it tracks points at a document outside it (a design note
or a shared folder that a reader of the repository does not have). Facts are restated with their
public source instead (docs/architecture.md, "Layers" and the data files' `source:` fields)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Spelled in pieces so this file does not match itself.
OUTSIDE = ("DESIGN" + ".md", "../" + "shared", "/work/" + "shared")


def test_no_tracked_file_cites_a_document_outside_the_repository() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    found = []
    for name in filter(None, tracked):
        path = ROOT / name
        if (
            path.suffix not in {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".sh", ".cfg"}
            and path.name != "Makefile"
        ):
            continue
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        found += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if any(o in line for o in OUTSIDE)]
    assert not found, "references to files outside the repository:\n" + "\n".join(found)
