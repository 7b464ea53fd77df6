"""Where a benchmark's table goes: ``bench-out/`` by default, docs/benchmarks.md with ``--write``."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
#: Ignored by git: a run without ``--write`` leaves every tracked file alone.
OUT = ROOT / "bench-out"


def add_write_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--write", action="store_true",
        help="update this benchmark's section of docs/benchmarks.md (tracked); "
        "by default the table is printed and saved under bench-out/",
    )


def update_section(name: str, text: str, write: bool = False, doc: Path | None = None) -> Path:
    """Save ``text`` as the section ``name`` of the benchmarks page; return the file written.

    The section is the text between ``<!-- name:start -->`` and
    ``<!-- name:end -->``. With ``write=False`` (the default) the table goes to
    ``bench-out/<name>.md`` and docs/benchmarks.md is left alone.
    """
    if doc is None:
        doc = DOC if write else OUT / f"{name}.md"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    body = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"{start}\n{text.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(body):
        body = pattern.sub(lambda _: block, body)
    else:
        body = body.rstrip() + f"\n\n{block}\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(body)
    return doc
