"""A short reader-study report: one HTML page with the results table, agreement, the
interpretation and the ROC curve (a PNG beside it drawn with matplotlib when it is installed,
else an SVG written inline by hand).
"""

from __future__ import annotations

import html
from pathlib import Path

from napari_medgan.io import atomic_path, atomic_write_text


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _ci(ci, scale: float = 1.0, spec: str = ".1f") -> str:
    return "-" if not ci else f"{format(scale * ci[0], spec)}-{format(scale * ci[1], spec)}"


def _row(name: str, r: dict) -> str:
    roc = r.get("roc") or {}
    cells = (name, r["n"], f"{r['correct']}", _fmt(r["accuracy"] and 100 * r["accuracy"], ".1f"),
             _ci(r["ci95"], 100), _fmt(r["p_value"], ".3g"), _fmt(roc.get("auc"), ".3f"),
             _ci(roc.get("ci95"), 1, ".3f"), _fmt(r["mean_confidence"], ".2f"))
    return "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"


def _curves(pooled: dict) -> list[tuple[str, list, list]]:
    curves = [(name, r["roc"]["fpr"], r["roc"]["tpr"]) for name, r in pooled["readers"].items()]
    if len(curves) > 1:
        curves.append(("pooled", pooled["pooled"]["roc"]["fpr"], pooled["pooled"]["roc"]["tpr"]))
    return curves


def _roc_png(pooled: dict, path: Path) -> bool:
    """Draw the ROC curves to ``path`` with matplotlib; False when it is not installed."""
    try:  # a bare Figure draws with Agg without touching pyplot's backend (napari's Qt one)
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(4, 4), dpi=100)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="chance")
    for name, fpr, tpr in _curves(pooled):
        ax.plot(fpr, tpr, marker="o", ms=3, lw=2 if name == "pooled" else 1, label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate",
           ylabel="true positive rate", title="ROC from the confidence ratings")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return True


def _roc_svg(pooled: dict, size: int = 320) -> str:
    """The ROC curves as an inline SVG (no plotting library needed)."""
    pad, span = 40, size - 60
    colors = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#000000")

    def xy(fpr, tpr):
        return f"{pad + fpr * span:.1f},{pad / 2 + (1 - tpr) * span:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}">',
             f'<rect x="{pad}" y="{pad / 2}" width="{span}" height="{span}" fill="none" '
             'stroke="#444"/>',
             f'<line x1="{pad}" y1="{pad / 2 + span}" x2="{pad + span}" y2="{pad / 2}" '
             'stroke="#aaa" stroke-dasharray="4"/>',
             f'<text x="{pad + span / 2}" y="{size - 6}" text-anchor="middle" '
             'font-size="11">false positive rate</text>',
             f'<text x="12" y="{pad / 2 + span / 2}" font-size="11" text-anchor="middle" '
             f'transform="rotate(-90 12 {pad / 2 + span / 2})">true positive rate</text>']
    for i, (name, fpr, tpr) in enumerate(_curves(pooled)):
        color = colors[-1] if name == "pooled" else colors[i % (len(colors) - 1)]
        points = " ".join(xy(f, t) for f, t in zip(fpr, tpr))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" '
                     f'stroke-width="{2 if name == "pooled" else 1}"/>')
        parts.append(f'<text x="{pad + span - 4}" y="{pad / 2 + span - 8 - 13 * i}" '
                     f'text-anchor="end" font-size="10" fill="{color}">'
                     f'{html.escape(name)}</text>')
    return "\n".join(parts + ["</svg>"])


def write_report(pooled: dict, path: str | Path, title: str = "Reader study") -> Path:
    """Write ``path`` (HTML) for a :func:`~napari_medgan.study_stats.pool_readers` result;
    the ROC curve goes to ``<stem>_roc.png`` beside it (or inline SVG)."""
    path = Path(path)
    png = path.with_name(f"{path.stem}_roc.png")
    figure = (f'<img src="{html.escape(png.name)}" alt="ROC curve" width="400">'
              if _roc_png(pooled, png) else _roc_svg(pooled))
    head = ("<tr><th>reader</th><th>n</th><th>correct</th><th>accuracy %</th>"
            "<th>95% CI %</th><th>one-sided p</th><th>ROC AUC</th><th>AUC 95% CI</th>"
            "<th>mean confidence</th></tr>")
    rows = [_row(name, r) for name, r in pooled["readers"].items()]
    if len(pooled["readers"]) > 1:
        rows.append(_row("pooled", pooled["pooled"]))
    agree = pooled.get("agreement") or {}
    agree_text = (f"<p>{html.escape(agree['method'])}: {_fmt(agree['kappa'], '.3f')} over "
                  f"{agree['n_items']} case(s) answered by all {agree['n_readers']} readers.</p>"
                  if agree.get("method") else "")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:60em}} td,th{{padding:2px 8px;text-align:right}}
table{{border-collapse:collapse}} tr:nth-child(even){{background:#f2f2f2}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Mode: {html.escape(pooled['mode'])}. Truth: {"real or synthetic" if pooled['mode'] == "single"
                                                 else "which of A, B is synthetic"}.
Chance is 50%. Intervals are 95% (Wilson for accuracy, DeLong for the AUC); the ROC uses the
answers with their 1-5 confidence as a 10-step rating. Pooled figures treat every trial as
independent.</p>
<table>{head}{''.join(rows)}</table>
{agree_text}
<p>{html.escape(pooled['interpretation'])}</p>
{figure}
</body></html>
"""
    atomic_write_text(path, page)
    return path
