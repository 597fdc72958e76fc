"""Reading the texts a command is given (files, ``-`` for standard input, or literal strings), and the
checks every scoring command makes on them before any model loads.

One reader for ``aep score`` and ``aep detect``/``aep attribute`` (``read_texts``):

- bytes are decoded with ``--encoding`` (UTF-8 by default; a leading UTF-8 byte-order mark is
  dropped); a file that does not decode is a one-line error giving the byte offset and the way out;
- an empty or whitespace-only text is an error (its score would be a number about nothing);
- a text that decodes to garbage (``garbled``: UTF-8 bytes read as UTF-16, UTF-16 bytes read one byte
  at a time) is refused, naming the encoding;
- control characters other than tab, newline and carriage return (NUL, escape, ...) are scored as
  they are, with a warning on stderr: they usually mean a binary file or a copy-paste accident;
- CR LF line ends are scored as they are, with a note on stderr (LF line ends score differently);
- ``--prompt-chars`` must be at least 0 and leave something to score.

Each error goes through ``fail``: ``error: <what is wrong>`` on stderr, exit code 2.
"""

from __future__ import annotations

import codecs
import re
import sys
import unicodedata
from pathlib import Path

import typer

from .app import fail

ALLOWED_CONTROLS = "\t\n\r"  # control characters that ordinary text holds
GARBLED_SHARE = 0.25  # a decoded text with at least this share of NUL and U+FFFD characters is refused
WIDE_CODECS = ("utf-16", "utf-32")  # codec names that read two or four bytes per character
BYTE_ORDER_MARKS = {"utf-32": (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE),  # UTF-32 LE's starts with UTF-16 LE's
                    "utf-16": (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)}


def looks_like_path(arg: str) -> bool:
    """An argument meant as a file name: one word with a folder separator or a short extension."""
    return not re.search(r"\s", arg) and bool(re.search(r"[/\\]|\.[A-Za-z0-9]{1,5}$", arg))


def check_encoding(encoding: str) -> str:
    """The codec's canonical name (``utf-8``, ``iso8859-1``, ...); an unknown name fails."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        fail(f"--encoding {encoding!r}: unknown encoding (e.g. utf-8, latin-1, cp1252, utf-16)")


def decode_text(data: bytes, label: str, encoding: str = "utf-8") -> str:
    """``data`` decoded with ``encoding``; a byte sequence it cannot decode fails with its byte offset."""
    name = check_encoding(encoding)
    try:
        text = data.decode(name)
    except UnicodeDecodeError as err:
        bad = data[err.start : min(err.end, err.start + 4)]
        what = f"byte 0x{bad.hex()}" if len(bad) == 1 else "bytes " + " ".join(f"0x{b:02x}" for b in bad)
        bom = byte_order_mark(data)
        way = (f"it starts with a {bom} byte-order mark: pass --encoding {bom}" if bom and bom != name else
               "if the text is in another encoding, say which with --encoding (e.g. --encoding latin-1)")
        fail(f"{label}: not valid {encoding}: {what} at byte offset {err.start} ({err.reason}); {way}")
    why = garbled(data, text, name)
    if why:
        fail(f"{label}: decoded as {encoding}, {why}")
    return text[1:] if name == "utf-8" and text.startswith("\ufeff") else text


def byte_order_mark(data: bytes) -> str | None:
    """``"utf-16"`` or ``"utf-32"`` when ``data`` starts with that encoding's byte-order mark, else None."""
    return next((codec for codec, marks in BYTE_ORDER_MARKS.items() if data.startswith(marks)), None)


def garbled(data: bytes, text: str, codec: str) -> str | None:
    """Why ``text``, ``data`` decoded with ``codec`` (a canonical name), is not the text the bytes hold, or
    None: a UTF-16/32 codec given bytes that are UTF-8 without a NUL byte (it reads them as other
    characters, CJK for ASCII), or a text of which ``GARBLED_SHARE`` or more are NUL or U+FFFD (UTF-16
    read one byte at a time, or a text damaged by an earlier lossy conversion)."""
    if codec.startswith(WIDE_CODECS) and b"\x00" not in data:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return (f"the text is garbled ({text[:12]!r}...): the bytes are UTF-8 without a NUL byte; leave "
                    "--encoding out to read them as UTF-8")
    bad = text.count("\x00") + text.count("\ufffd")
    if text and bad >= GARBLED_SHARE * len(text):
        bom = byte_order_mark(data)
        hint = (f"; it starts with a {bom} byte-order mark: pass --encoding {bom}" if bom and not codec.startswith(bom)
                else "; it looks like UTF-16: pass --encoding utf-16" if not codec.startswith(WIDE_CODECS)
                and text.count("\x00") >= GARBLED_SHARE * len(text) else "; is it in another encoding?")
        return f"the text is garbled: {bad} of its {len(text)} characters are NUL or U+FFFD (replacement){hint}"
    return None


def control_characters(text: str) -> list[tuple[int, str]]:
    """``[(character index, character)]`` of the control characters (Unicode category Cc) other than
    tab, newline and carriage return."""
    return [(i, c) for i, c in enumerate(text) if c not in ALLOWED_CONTROLS and unicodedata.category(c) == "Cc"]


def check_text(label: str, text: str) -> str:
    """``text`` if it can be scored: an empty or whitespace-only text fails; control characters give a
    warning on stderr, CR LF line ends inside the text (a lone final line end aside) a note (the text is
    still scored, as it is: the same text with LF line ends tokenises, and scores, differently)."""
    if not text:
        fail(f"{label}: the text is empty: nothing to score")
    if not text.strip():
        fail(f"{label}: the text is only whitespace ({len(text)} characters): nothing to score")
    found = control_characters(text)
    if found:
        i, c = found[0]
        typer.secho(f"warning: {label}: {len(found)} control character(s), the first U+{ord(c):04X} at character {i}; "
                    "they are scored as they are (is this a binary file?)", fg=typer.colors.YELLOW, err=True)
    if "\r\n" in text.rstrip():
        crlf = text.count("\r\n")
        typer.secho(f"note: {label}: {crlf} CR LF (Windows) line end(s), scored as they are; the same text with LF "
                    "line ends scores differently", err=True)
    return text


def split_prompt(label: str, text: str, prompt_chars: int) -> tuple[str, str]:
    """``(prompt, scored part)``: the first ``prompt_chars`` characters are context. A negative count,
    or one that leaves only whitespace to score, fails."""
    if prompt_chars < 0:
        fail(f"--prompt-chars must be 0 or more, got {prompt_chars}")
    prompt, rest = text[:prompt_chars], text[prompt_chars:]
    if not rest.strip():
        fail(f"{label}: --prompt-chars {prompt_chars} leaves nothing to score (the text has {len(text)} characters"
             f"{', the rest is whitespace' if rest else ''})")
    return prompt, rest


def path_kind(path: Path) -> str | None:
    """``"file"``, ``"other"`` (a folder, a device) or None: nothing there, or a name the system cannot look up
    (too long, an embedded NUL: a literal text, not a file name)."""
    try:
        return "file" if path.is_file() else "other" if path.exists() else None
    except (OSError, ValueError):
        return None


def read_input(arg: str, encoding: str = "utf-8", literal: bool = True) -> tuple[str, str]:
    """``(label, text)`` of one argument: ``-`` (stdin), a file, or (``literal``) the text itself. Files
    and stdin are decoded with ``encoding``; a missing file, a folder or undecodable bytes fail. The
    text is not checked here (``check_text``)."""
    if arg == "-":
        stream = getattr(sys.stdin, "buffer", None)  # bytes, to decode with encoding; else already text
        text = decode_text(stream.read(), "<stdin>", encoding) if stream is not None else sys.stdin.read()
        return "<stdin>", text
    if not arg:  # Path("") is the current folder: an empty argument is an empty text
        return "", arg
    path = Path(arg)
    kind = path_kind(path)
    if kind == "file":
        try:
            data = path.read_bytes()
        except OSError as err:
            fail(f"{arg}: cannot be read: {err.strerror or err}")
        return arg, decode_text(data, arg, encoding)
    if kind == "other":
        fail(f"{arg}: not a regular file")
    if not literal:
        fail(f"{arg}: no such file")
    if looks_like_path(arg):
        fail(f"{arg}: no such file (pass the text itself in quotes to score a literal text)")
    return "", arg


def read_texts(inputs: list[str], encoding: str = "utf-8") -> list[tuple[str, str]]:
    """``[(label, text)]``: each argument is a file (read), ``-`` (stdin) or a literal text, decoded and
    checked (``read_input``, ``check_text``)."""
    out = []
    for arg in inputs:
        label, text = read_input(arg, encoding)
        label = label or f"<text {len(out) + 1}>"
        out.append((label, check_text(label, text)))
    return out
