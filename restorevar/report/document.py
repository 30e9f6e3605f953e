"""A small document model rendered twice: Markdown (figures beside it) and self-contained HTML (figures
embedded as data URIs, inline CSS, no external requests)."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1180px;margin:24px auto;
padding:0 20px;color:#1d1f21;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
h3{margin-top:1.2em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.86em}
th,td{border:1px solid #d0d4d9;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f2f4f7;white-space:normal;max-width:120px;overflow-wrap:anywhere;vertical-align:bottom}
.scroll{overflow-x:auto}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafbfc}
.note{color:#555;font-size:.9em}.meta{background:#f6f8fa;border:1px solid #e1e4e8;padding:8px 12px;
border-radius:6px;font-size:.9em}
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}img{max-width:100%}
code{background:#f2f4f7;padding:0 3px;border-radius:3px}
"""


@dataclass
class Block:
    kind: str  # heading | text | table | figure | meta
    content: object
    level: int = 2
    caption: str = ""


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(Block("heading", text, level))

    def text(self, text: str, note: bool = False) -> None:
        self.blocks.append(Block("text", text, 1 if note else 0))

    def meta(self, items: dict[str, str]) -> None:
        self.blocks.append(Block("meta", items))

    def table(self, df: pd.DataFrame, caption: str = "") -> None:
        self.blocks.append(Block("table", df, caption=caption))

    def figure(self, path: Path, caption: str) -> None:
        self.blocks.append(Block("figure", Path(path), caption=caption))

    # -- Markdown -----------------------------------------------------------------------------
    def to_markdown(self, base: Path) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if b.kind == "heading":
                out += ["#" * b.level + " " + str(b.content), ""]
            elif b.kind == "text":
                out += [(f"_{b.content}_" if b.level else str(b.content)), ""]
            elif b.kind == "meta":
                out += [f"- **{k}**: {v}" for k, v in b.content.items()] + [""]
            elif b.kind == "table":
                if b.caption:
                    out += [f"**{b.caption}**", ""]
                out += [b.content.to_markdown(index=False), ""]
            elif b.kind == "figure":
                out += [f"![{b.caption}]({b.content.relative_to(base).as_posix()})", "", f"_{b.caption}_", ""]
        return "\n".join(out)

    # -- HTML ---------------------------------------------------------------------------------
    def to_html(self) -> str:
        e = html.escape
        out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
               f"<title>{e(self.title)}</title><style>{CSS}</style></head><body>", f"<h1>{e(self.title)}</h1>"]
        for b in self.blocks:
            if b.kind == "heading":
                out.append(f"<h{b.level}>{e(str(b.content))}</h{b.level}>")
            elif b.kind == "text":
                out.append(f'<p class="note">{_inline(b.content)}</p>' if b.level else f"<p>{_inline(b.content)}</p>")
            elif b.kind == "meta":
                rows = "".join(f"<div><b>{e(k)}</b>: {_inline(v)}</div>" for k, v in b.content.items())
                out.append(f'<div class="meta">{rows}</div>')
            elif b.kind == "table":
                df: pd.DataFrame = b.content
                head = "".join(f"<th>{e(str(c))}</th>" for c in df.columns)
                body = "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>"
                               for row in df.itertuples(index=False))
                cap = f"<caption style='caption-side:top;text-align:left'>{_inline(b.caption)}</caption>" if b.caption else ""
                out.append(f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
                           "</table></div>")
            elif b.kind == "figure":
                data = base64.b64encode(b.content.read_bytes()).decode()
                out.append(f'<figure><img alt="{e(b.caption.replace("`", ""))}" src="data:image/png;base64,{data}">'
                           f"<figcaption>{_inline(b.caption)}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


def _inline(text: object) -> str:
    """Escape, then turn `code` spans into <code>."""
    parts = html.escape(str(text)).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
