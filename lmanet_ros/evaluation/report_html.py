"""``report.html``: ``report.md`` as a self-contained web page (relative links to the plots and
videos beside it, inline CSS, no script).

The page is converted from the Markdown text, so both say the same: a renderer of the subset
:mod:`.report` and :mod:`.corruption_report` write (ATX headings, paragraphs, ``-`` lists, pipe
tables, `code` and **bold**, and one image per line: ``![title](file)``, a ``.mp4`` file
becoming a ``<video>`` element).
"""
from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator

__all__ = ["HTML_FILE", "markdown_to_html"]

HTML_FILE = "report.html"

_MEDIA = re.compile(r"!\[(?P<title>[^\]]*)\]\((?P<src>[^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_STYLE = """
body { font-family: sans-serif; max-width: 80em; margin: 1em auto; padding: 0 1em;
       line-height: 1.4; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.6em; }
th { background: #eee; }
td:not(:first-child) { text-align: right; }
code { background: #f3f3f3; padding: 0 0.2em; }
img, video { max-width: 100%; }
figure { margin: 1em 0; }
figcaption { color: #555; font-size: 0.9em; }
"""


def _inline(text: str) -> str:
    """One line of Markdown text as HTML: escaped, `code` and **bold** marked up."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(f"<code>{html.escape(part[1:-1])}</code>" if part.startswith("`")
                   and part.endswith("`") and len(part) > 1
                   else _BOLD.sub(r"<strong>\1</strong>", html.escape(part)) for part in parts)


def _cells(line: str) -> list[str]:
    """The cells of a pipe-table row."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _table(lines: list[str]) -> str:
    """A pipe table (header, ``|---|`` rule, rows) as an HTML table."""
    head = "".join(f"<th>{_inline(cell)}</th>" for cell in _cells(lines[0]))
    rows = "".join("<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in _cells(line))
                   + "</tr>\n" for line in lines[2:])
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>"


def _media(title: str, src: str) -> str:
    """A figure: an image, or for an MP4 a muted video with controls (and a link to the file)."""
    source = html.escape(src, quote=True)
    caption = f"<figcaption>{_inline(title)}</figcaption>"
    if src.lower().endswith(".mp4"):
        return (f'<figure><video controls muted playsinline preload="auto">'
                f'<source src="{source}" type="video/mp4">'
                f'<a href="{source}">{source}</a></video>{caption}</figure>')
    return f'<figure><img src="{source}" alt="{html.escape(title, quote=True)}">{caption}</figure>'


def _is_block_start(line: str) -> bool:
    return line.startswith(("#", "|", "- ")) or _MEDIA.fullmatch(line.strip()) is not None


def _take(lines: list[str], start: int, keep: Callable[[str], bool]) -> int:
    """The index after the run of lines from ``start`` for which ``keep`` holds."""
    end = start
    while end < len(lines) and keep(lines[end]):
        end += 1
    return end


def _blocks(lines: list[str]) -> Iterator[str]:
    """The HTML blocks of Markdown ``lines``."""
    index = 0
    while index < len(lines):
        line = lines[index]
        media = _MEDIA.fullmatch(line.strip())
        if not line.strip():
            index += 1
        elif line.startswith("#"):
            level = min(6, len(line) - len(line.lstrip("#")))
            yield f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>"
            index += 1
        elif media is not None:
            yield _media(media["title"], media["src"])
            index += 1
        elif line.startswith("|"):
            end = _take(lines, index, lambda text: text.startswith("|"))
            yield _table(lines[index:end])
            index = end
        elif line.startswith("- "):
            end = _take(lines, index, lambda text: text.startswith("- "))
            yield "<ul>\n" + "".join(f"<li>{_inline(item[2:])}</li>\n"
                                     for item in lines[index:end]) + "</ul>"
            index = end
        else:
            end = _take(lines, index + 1, lambda text: bool(text.strip())
                        and not _is_block_start(text))
            yield f"<p>{_inline(' '.join(lines[index:end]))}</p>"
            index = end


def markdown_to_html(markdown: str) -> str:
    """The report page of a ``report.md`` text (its first heading is the page title)."""
    lines = markdown.splitlines()
    title = next((line.lstrip("#").strip() for line in lines if line.startswith("#")), "report")
    body = "\n".join(_blocks(lines))
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"{body}\n</body>\n</html>\n")
