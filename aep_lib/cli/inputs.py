"""Reading the texts a command is given: files, ``-`` for standard input, or literal strings."""

from __future__ import annotations

import sys
from pathlib import Path

from .app import fail


def looks_like_path(arg: str) -> bool:
    """An argument meant as a file name: one word with a folder separator or a short extension."""
    import re

    return not re.search(r"\s", arg) and bool(re.search(r"[/\\]|\.[A-Za-z0-9]{1,5}$", arg))


def read_texts(inputs: list[str]) -> list[tuple[str, str]]:
    """``[(label, text)]``: each argument is a file (read), ``-`` (stdin) or a literal text."""
    out = []
    for arg in inputs:
        if arg == "-":
            out.append(("<stdin>", sys.stdin.read()))
        elif Path(arg).is_file():
            try:
                out.append((arg, Path(arg).read_text(encoding="utf-8")))
            except UnicodeDecodeError:
                fail(f"{arg}: not a UTF-8 text file")
        elif Path(arg).exists():
            fail(f"{arg}: not a regular file")
        elif looks_like_path(arg):
            fail(f"{arg}: no such file (pass the text itself in quotes to score a literal text)")
        else:
            out.append((f"<text {len(out) + 1}>", arg))
    return out

