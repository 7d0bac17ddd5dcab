#!/usr/bin/python3
"""Turn a guide in docs/ into the Markdown that go-md2man makes a man page of.

The man page sip.yaml(5) is built from docs/configuration.md at package build time, so it is never
older than the guide. The guide is written for a browser, and a man page reads differently, so:

* the page's title (``# ...``) and its ``## Contents`` list are dropped; ``##`` headings become the
  man page's sections (upper case), ``###`` its subsections;
* a table becomes a list a terminal can show: one entry per row, named by the row's first cell, with
  the other cells as ``Header: value.`` (a last column headed ``Meaning`` is the entry's text); a
  table with an empty first cell is two lists side by side, so it becomes one list per column;
* a link to another guide names its installed file (/usr/share/doc/sipserver/logging.md), a link
  within the page keeps only its text, and a web link stays for go-md2man to print;
* code blocks are copied as they are, and a list item's lines are indented the way go-md2man reads
  them (four spaces for its paragraphs, eight for its code), or they would leave the list.

The result is put into a template (debian/sip.yaml.5.md) where it has a line ``@include PATH``, under
a title line made from ``--date`` and ``--source``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

DOC_DIR = "/usr/share/doc/sipserver"
LINK = re.compile(r"\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CELL_SPLIT = re.compile(r"(?<!\\)\|")
LIST_ITEM = re.compile(r"^([*+-]|\d+\.) ")


def convert(markdown: str) -> str:
    """The guide's text, rewritten for a man page (see the module's docstring)."""
    out: list[str] = []
    lines = markdown.splitlines()
    index = 0
    in_fence = False
    fence_indent = 0  # the indentation of a fenced block inside a list item
    in_list = False
    skipping_section = False
    while index < len(lines):
        line = lines[index]
        if FENCE.match(line):
            in_fence = not in_fence
            fence_indent = len(line) - len(line.lstrip()) if in_fence and in_list else 0
            if not skipping_section:
                out.append("" if in_list else line)
            index += 1
            continue
        if in_fence:
            if not skipping_section:
                out.append("        " + line[fence_indent:] if in_list else line)
            index += 1
            continue
        if LIST_ITEM.match(line):
            in_list = True
        elif line.strip() and not line.startswith("  "):
            in_list = False
        elif in_list and line.strip():
            line = "  " + line
        if line.startswith("## "):
            title = line[3:].strip()
            skipping_section = title.lower() == "contents"
            if not skipping_section:
                out.append("# " + plain(title).upper())
            index += 1
            continue
        if skipping_section:
            index += 1
            continue
        if line.startswith("# "):  # the page's own title: the man page has its own
            index += 1
            continue
        if line.startswith("### "):
            out.append("## " + plain(line[4:].strip()))
            index += 1
            continue
        if line.lstrip().startswith("|"):
            table = []
            while index < len(lines) and lines[index].lstrip().startswith("|"):
                table.append(lines[index])
                index += 1
            out.extend(table_as_lists(table))
            continue
        out.append(links(line))
        index += 1
    return "\n".join(squeeze(out)).strip() + "\n"


def plain(title: str) -> str:
    """A heading's text without Markdown: links reduced to their text, no backquotes."""
    return LINK.sub(lambda match: match["text"], title).replace("`", "")


def links(text: str) -> str:
    """Links as a man page can show them: see :func:`convert`."""

    def one(match: re.Match[str]) -> str:
        text, target = match["text"], match["target"]
        if target.startswith("#"):
            return text
        if re.match(r"^[a-z]+:", target):
            return match[0]
        path, _, _anchor = target.partition("#")
        installed = f"{DOC_DIR}/{os.path.basename(path)}"
        if text.strip("`") == os.path.basename(path):
            return f"*{installed}*"
        return f"{text} (*{installed}*)"

    return LINK.sub(one, text)


def cells(row: str) -> list[str]:
    row = row.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    return [links(cell.strip().replace("\\|", "|")) for cell in CELL_SPLIT.split(row)]


def table_as_lists(rows: list[str]) -> Iterator[str]:
    """A pipe table as one list entry per row, or one list per column (see :func:`convert`)."""
    header = cells(rows[0])
    body = [cells(row) for row in rows[1:] if not re.fullmatch(r"[\s|:-]+", row)]
    yield ""
    if all(row and row[0] for row in body):
        last_is_text = header[-1].lower() == "meaning"
        for row in body:
            labelled = row[1:-1] if last_is_text else row[1:]
            parts = [sentence(f"{name}: {value}") for name, value in zip(header[1:], labelled, strict=False) if value]
            if last_is_text and len(row) > 1 and row[-1]:
                parts.append(row[-1])
            yield row[0]
            yield ": " + " ".join(parts)
            yield ""
    else:
        for column, name in enumerate(header):
            yield f"**{name}**"
            yield ""
            for row in body:
                if column < len(row) and row[column]:
                    yield f"* {row[column]}"
            yield ""


def sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else text + "."


def squeeze(lines: list[str]) -> list[str]:
    """At most one blank line in a row."""
    result: list[str] = []
    for line in lines:
        if line.strip() or (result and result[-1].strip()):
            result.append(line.rstrip() if line.strip() else "")
    return result


def page(template: str, template_dir: Path, *, date: str, source: str) -> str:
    """The template with each ``@include PATH`` line replaced by that guide, converted."""
    out = []
    for line in template.splitlines():
        if line.startswith("@include "):
            out.append(convert((template_dir / line.split(None, 1)[1].strip()).read_text(encoding="utf-8")))
        elif line.startswith("% "):  # the title line: name, section, then the date and the source
            out.append(line.rstrip() + f' "{date}" "{source}" "sipserver manual"')
        else:
            out.append(line)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("template", type=Path, help="the man page's Markdown, with @include lines")
    parser.add_argument("--source", default="sipserver", help='the footer\'s source, e.g. "sipserver 0.1.0"')
    parser.add_argument("--date", help="the page's date (default: SOURCE_DATE_EPOCH, else today)")
    args = parser.parse_args(argv)
    date = args.date
    if date is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        when = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC) if epoch else None
        date = (when or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%d")
    template = args.template.read_text(encoding="utf-8")
    sys.stdout.write(page(template, args.template.parent, date=date, source=args.source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
