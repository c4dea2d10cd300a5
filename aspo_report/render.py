"""Rendering of the experiment report's blocks (aspo_report.document builds them): Markdown, self-contained HTML,
and the README's claims table between its markers. Text from the logs (run ids, task and model names, config
values) is shown literally in both: HTML-escaped in report.html, Markdown-escaped in summary.md."""
from __future__ import annotations

import html
import re

import plotly.io as pio

from aspo_report.claims import VERDICTS

README_START, README_END = "<!-- aspo report: claims -->", "<!-- /aspo report: claims -->"
SECTION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


def readme_markers(section: str | None = None) -> tuple[str, str]:
    """The markers of the README block a report's claims table replaces: README_START/END, or for a named section
    (a README with several grids) `<!-- aspo report: claims SECTION -->` ... `<!-- /aspo report: claims SECTION -->`."""
    if section is None:
        return README_START, README_END
    if not SECTION_NAME.fullmatch(section):
        raise ValueError(f"section {section!r}: use lower-case letters, digits, - and _ (at most 40)")
    return f"<!-- aspo report: claims {section} -->", f"<!-- /aspo report: claims {section} -->"
# the characters Markdown (CommonMark, GFM tables, $math$, ~strike~) or raw HTML would act on
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~$!&])")


def md_text(text) -> str:
    """`text` shown literally in Markdown, on one line: a run id such as `[x](javascript:..)` or `<img ...>`
    stays text, and a `|` cannot split a table cell."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).splitlines()))


def render_md(blocks, generated: str) -> str:
    out = []
    for b in blocks:
        if b[0] in ("h1", "h2", "h3"):
            out.append("#" * int(b[0][1]) + " " + md_text(b[1]) + ("\n\n" + md_text(generated) if b[0] == "h1" else ""))
        elif b[0] == "p":
            out.append(md_text(b[1]))
        elif b[0] == "table":
            out.append("\n".join(["| " + " | ".join(map(md_text, b[1])) + " |", "|" + "---|" * len(b[1]),
                                  *["| " + " | ".join(map(md_text, r)) + " |" for r in b[2]]]))
        elif b[0] == "fig":
            out.append(f"*Figure `{b[1]}`: {md_text(b[2].layout.title.text)} (see report.html)*")
    return "\n\n".join(out) + "\n"


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:4px 6px;
vertical-align:top;text-align:left}th{background:#f4f4f4}.v-reproduced{background:#d4edda}
.v-not-reproduced{background:#f8d7da}.v-inconclusive{background:#fff3cd}.v-not-run,.v-not-measured{background:#e2e3e5}
.generated{color:#777}.claims td:nth-child(4){min-width:460px}.claims td:nth-child(2){min-width:180px}"""


def render_html(blocks, generated: str) -> str:
    from plotly.offline import get_plotlyjs  # noqa: PLC0415
    esc = html.escape
    body = []
    for b in blocks:
        if b[0] in ("h1", "h2", "h3"):
            gen = f'<p class="generated">{esc(generated)}</p>' if b[0] == "h1" else ""
            body.append(f"<{b[0]}>{esc(b[1])}</{b[0]}>{gen}")
        elif b[0] == "p":
            body.append(f"<p>{esc(b[1])}</p>")
        elif b[0] == "table":
            td = lambda s: (f'<td class="v-{s.replace(" ", "-")}"><b>{esc(s)}</b></td>' if s in VERDICTS  # noqa: E731
                            else f"<td>{esc(str(s)).replace('; ', ';<br>')}</td>")
            body.append(f'<table class="{"claims" if "verdict" in b[1] else "numbers"}"><tr>'
                        + "".join(f"<th>{esc(h)}</th>" for h in b[1]) + "</tr>"
                        + "".join("<tr>" + "".join(td(c) for c in r) + "</tr>" for r in b[2]) + "</table>")
        elif b[0] == "fig":
            body.append(pio.to_html(b[2], full_html=False, include_plotlyjs=False, div_id=b[1],
                                    default_height=f"{b[2].layout.height or 360}px", config={"displaylogo": False}))
    title = next((b[1] for b in blocks if b[0] == "h1"), "aspo report")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style>\n<script>{get_plotlyjs()}</script>\n</head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def claims_markdown(summary: dict) -> str:
    """One row per claim, one column per task group: the verdict, then each check's d with its 95% interval
    and the seeds it took (n) and would need for 80% power."""
    groups = list(summary["tasks"])
    first = summary["tasks"][groups[0]]["claims"]
    head = "| paper's claim | " + " | ".join(map(md_text, groups)) + " |\n|---|" + "---|" * len(groups)
    rows = []
    for i, claim in enumerate(first):
        cells = [_claim_cell(summary["tasks"][g]["claims"][i], summary["tasks"][g]["algos"]) for g in groups]
        rows.append(f"| {claim['id']}. {claim['claim']} | " + " | ".join(cells) + " |")
    return head + "\n" + "\n".join(rows)


def _claim_cell(claim: dict, algos: dict) -> str:
    if claim["verdict"] in ("not run", "not measured"):
        return claim["verdict"]
    parts = []
    for c in claim["checks"]:
        n = algos[c["algo"]]["metrics"][c["metric"]]["n"]
        ci = f" [{c['ci'][0]:+.3g}, {c['ci'][1]:+.3g}]" if c.get("ci") else ""
        need = f", needs {c['seeds_needed']}" if c.get("seeds_needed") else ""
        parts.append(f"{c['algo']} {c['metric']} {c['direction']} {c['against']}: d={c['d']:+.3g}{ci} (n={n}{need})"
                     if c["d"] is not None else f"{c['algo']} {c['metric']}: {c['why']}")
    return f"**{claim['verdict']}**: " + "; ".join(parts)


def replace_in_readme(text: str, table: str, section: str | None = None) -> str:
    """README text with the block between the section's markers (readme_markers) replaced by `table`."""
    start, end = readme_markers(section)
    if start not in text or end not in text:
        raise ValueError(f"the README has no {start} ... {end} markers to replace")
    head, rest = text.split(start, 1)
    return head + start + "\n" + table + "\n" + end + rest.split(end, 1)[1]
