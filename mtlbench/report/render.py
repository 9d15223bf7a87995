"""Write a report folder: report.md, a self-contained report.html, tables/*.csv|tex, figures/*.png|svg.

The report is built as a list of blocks (heading, text, list, table, figure) that render to both
Markdown and HTML, so the two always say the same thing.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from mtlbench.report.figures import FIGURES, caption, render_all
from mtlbench.report.leaderboard import DEFAULT_MIN_POSITIVES, DEFAULT_REFERENCE, Leaderboard, leaderboard
from mtlbench.report.load import Protocol, load_protocols
from mtlbench.report.leak import (
    RANDOM_IMAGE,
    LeakComparison,
    leak_comparisons,
    leak_summary,
    leak_table,
    leak_task_table,
)
from mtlbench.report.generalization import GENERALIZATION_EXPLANATION, generalization_table
from mtlbench.report.ladder import LADDER_EXPLANATION, find_ladders, ladder_table
from mtlbench.report.paper_check import check_claims
from mtlbench.report.table import column_legend, display_table, per_task_table, table_notes
from mtlbench.report.tuning import EXPLANATION as TUNING_EXPLANATION, tuning_frame, tuning_table

LEAKY_HEADING = " — LEAKY: split by image (`--split random-image`), a test image's patient may be in training"


@dataclass(frozen=True)
class Block:
    """One piece of the report: kind is heading | text | list | table | figure."""

    kind: str
    content: object
    extra: object = None


def write_report(
    results: Path,
    out: Path,
    dataset: str | None = None,
    methods: list[str] | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
    resamples: int = 1000,
    reference: str = DEFAULT_REFERENCE,
    min_positives: int = DEFAULT_MIN_POSITIVES,
) -> list[Path]:
    """Render the report of the database at `results` into `out`, comparing against the method
    `reference`, averaging over tasks with at least `min_positives` test positives; returns the files written."""
    protocols = load_protocols(results, dataset, methods, reference)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    advance = progress("rendering report", len(protocols) * (len(FIGURES) + 1)) if progress else (lambda n=1: None)
    blocks = [
        Block("heading", "mtlbench report", 1),
        Block(
            "text",
            f"From `{results}`: {sum(len(p.runs) for p in protocols)} finished run(s) in "
            f"{len(protocols)} protocol(s). Runs are grouped by protocol (everything in the config "
            "but the method, its hyperparameters and the seed), so different protocols are never "
            "merged.",
        ),
    ]
    written: list[Path] = []
    boards: dict[str, Leaderboard] = {}
    for index, protocol in enumerate(protocols):
        name = f"{protocol.dataset}-{protocol.key}"
        board = leaderboard(protocol, protocol.reference_variant(reference), resamples, min_positives)
        boards[protocol.key] = board
        table = display_table(board)
        advance(1)
        written += _tables(board, table, out / "tables" / f"leaderboard_{name}")
        figures = render_all(protocol, board, out / "figures" / name, advance)
        written += [f for files in figures.values() for f in files]
        blocks += _protocol_blocks(index, protocol, board, table, figures, out, check_claims(board))
    for protocol in protocols:
        table = generalization_table(protocol, boards[protocol.key])
        if not table.empty:
            stem = out / "tables" / f"generalization_{protocol.dataset}-{protocol.key}.csv"
            table.to_csv(stem, index=False)
            written.append(stem)
            blocks += [
                Block("heading", f"Cross-dataset test: trained on {protocol.dataset}", 2),
                Block("text", GENERALIZATION_EXPLANATION),
                Block("table", table),
            ]
    blocks += _leak_blocks(leak_comparisons(protocols, resamples, min_positives))
    for rungs in find_ladders(protocols):
        table = ladder_table(rungs, boards)
        blocks += [
            Block("heading", "The DeepChest ladder: from the fair protocol to the authors'", 2),
            Block("text", LADDER_EXPLANATION),
            Block("table", table),
        ]
        stem = out / "tables" / f"ladder_{rungs[0].key if rungs[0] else 'start'}.csv"
        table.to_csv(stem, index=False)
        written.append(stem)
    trials = tuning_frame(results, dataset, methods)
    if not trials.empty:
        trials.to_csv(out / "tables" / "tuning.csv", index=False)
        written.append(out / "tables" / "tuning.csv")
        blocks += [
            Block("heading", "Tuning", 2),
            Block("text", TUNING_EXPLANATION),
            Block("table", tuning_table(trials)),
        ]
    md = out / "report.md"
    md.write_text(to_markdown(blocks))
    page = out / "report.html"
    page.write_text(to_html(blocks, out))
    return [md, page, *written]


def _protocol_blocks(
    index: int,
    protocol: Protocol,
    board: Leaderboard,
    table: pd.DataFrame,
    figures: dict[str, list[Path]],
    out: Path,
    claims: list[str],
) -> list[Block]:
    c = protocol.config
    blocks = [
        Block(
            "heading",
            f"Protocol {index + 1}: {protocol.dataset}, {c.get('image_size')} px, "
            f"{c.get('epochs')} epochs, {c.get('precision')}, {c.get('loss', 'bce')} loss (key {protocol.key})"
            + (LEAKY_HEADING if c.get("split") == RANDOM_IMAGE else ""),
            2,
        ),
        Block(
            "text",
            "Settings: "
            + ", ".join(
                f"{k}={v}" for k, v in sorted(c.items()) if k not in ("data_fingerprint",) and not isinstance(v, dict)
            )
            + ".",
        ),
        Block("heading", "Leaderboard", 3),
        Block("table", table),
        Block("list", table_notes(board)),
        Block("text", "Columns:"),
        Block("list", [f"**{k}**: {v}" for k, v in column_legend(board).items()]),
        Block("heading", "Per-task test AUROC", 3),
        Block("table", per_task_table(board)),
        Block(
            "text",
            "Seed mean [95% interval over patients and seeds]; the header gives each task's test positives"
            + (" of its labelled test images" if board.labelled is not None else "")
            + f", marked † where fewer than {board.min_positives} (left out of every mean).",
        ),
    ]
    bad = protocol.runs[protocol.runs["status"] != "complete"]
    if len(bad):
        blocks += [
            Block("heading", "Runs that did not complete", 3),
            Block(
                "list",
                [
                    f"{r.variant} seed {r.seed}: {r.status}"
                    + (
                        f" ({r.error.strip().splitlines()[0]})" if isinstance(r.error, str) and r.error.strip() else ""
                    )  # the first line: the traceback stays in the database
                    for r in bad.itertuples()
                ],
            ),
        ]
    blocks += [
        Block("heading", "The DeepChest paper's claims, checked against this data", 3),
        Block("list", claims),
        Block("heading", "Figures", 3),
    ]
    for name, files in figures.items():
        blocks.append(Block("figure", files[0].relative_to(out), caption(name, board.reference)))
    return blocks


def _leak_blocks(comparisons: list[LeakComparison]) -> list[Block]:
    """The patient-leak section: one summary, a mean table and a per-task table per random-image protocol."""
    blocks = []
    for comparison in comparisons:
        blocks += [
            Block("heading", "The patient leak: split by image against split by patient", 2),
            Block("text", leak_summary(comparison)),
            Block("table", leak_table(comparison)),
            Block("heading", "Per task: Δ AUROC, random-image − patient-wise", 3),
            Block("table", leak_task_table(comparison)),
            Block(
                "text",
                "* Holm-adjusted p < 0.05 over the tasks of the variant; † fewer test positives than --min-positives "
                "(left out of the means above); — undefined (one class among these test images).",
            ),
        ]
    return blocks


def _tables(board: Leaderboard, table: pd.DataFrame, stem: Path) -> list[Path]:
    """The numeric frame as CSV (numbers at full precision), the shown table as LaTeX."""
    csv, tex = stem.with_suffix(".csv"), stem.with_suffix(".tex")
    board.frame.to_csv(csv, index=False)
    per_task = stem.with_name(stem.name.replace("leaderboard_", "per_task_", 1) + ".csv")
    board.per_task.to_csv(per_task, index=False)
    bold = table.replace(r"\*\*(.*)\*\*", r"\\textbf{\1}", regex=True)
    escaped = bold.map(
        lambda s: str(s).replace("%", r"\%").replace("±", r"$\pm$").replace("×", r"$\times$").replace("_", r"\_")
    )
    escaped.columns = [str(c).replace("%", r"\%").replace("×", r"$\times$") for c in table.columns]
    tex.write_text(escaped.to_latex(index=False, escape=False))
    return [csv, per_task, tex]


def to_markdown(blocks: list[Block]) -> str:
    """The blocks as Markdown."""
    parts = []
    for b in blocks:
        if b.kind == "heading":
            parts.append("#" * int(b.extra) + " " + str(b.content))
        elif b.kind == "text":
            parts.append(str(b.content))
        elif b.kind == "list":
            parts.append("\n".join(f"- {item}" for item in b.content))
        elif b.kind == "table":
            parts.append(_md_table(b.content))
        elif b.kind == "figure":
            parts.append(f"![{b.extra}]({b.content})\n\n*{b.extra}*")
    return "\n\n".join(parts) + "\n"


def _md_table(table: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    rows = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def to_html(blocks: list[Block], root: Path) -> str:
    """The blocks as one HTML page; figures are embedded, so the page stands alone."""
    body = []
    for b in blocks:
        if b.kind == "heading":
            body.append(f"<h{b.extra}>{html.escape(str(b.content))}</h{b.extra}>")
        elif b.kind == "text":
            body.append(f"<p>{_inline(str(b.content))}</p>")
        elif b.kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline(str(i))}</li>" for i in b.content) + "</ul>")
        elif b.kind == "table":
            cells = b.content.map(lambda s: _inline(str(s)))
            body.append(cells.to_html(index=False, escape=False, border=0, classes="leaderboard"))
        elif b.kind == "figure":
            data = base64.b64encode((root / b.content).read_bytes()).decode()
            body.append(
                f'<figure><img alt="{html.escape(str(b.extra))}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(str(b.extra))}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;font-size:12px}td,th{padding:3px 6px;border-bottom:1px solid #ddd}"
        "img{max-width:100%}figcaption{font-style:italic;font-size:13px}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>mtlbench report</title><style>{style}</style>"
        f"</head><body>{''.join(body)}</body></html>\n"
    )


def _inline(text: str) -> str:
    escaped = html.escape(text)
    parts = escaped.split("**")
    out = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
