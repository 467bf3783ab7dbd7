"""`rides evaluate`: what live evaluation knows, as a table in the terminal and a small HTML
report (RMSE per hour and version, plotted; drift per feature).

The figures come from the evaluations table the evaluation consumer writes; they are the same
`rides.stream.evaluation.metrics` the consumer emits as metrics and the gate judges with.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from rides.stream.evaluation.metrics import Summary, summarize


@dataclass
class VersionFigures:
    model: str
    version: str
    role: str
    overall: Summary
    hours: dict[str, Summary]


@dataclass
class Comparison:
    model: str
    shadow: str
    production: str
    shadow_figures: Summary
    production_figures: Summary


@dataclass
class Report:
    versions: list[VersionFigures] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    drift: dict[str, dict[str, tuple[float, int]]] = field(default_factory=dict)  # hour → name → (PSI, n)


class RowFigures:
    """Evaluated pairs (the archive's recomputation: (model, version, role) → rows with
    ride_id, hour, predicted, actual), read like the evaluations table."""

    def __init__(self, rows: dict):
        self.rows = rows

    def versions(self):
        return list(self.rows)

    def hours(self, model, version, role) -> dict[str, Summary]:
        by_hour: dict[str, list] = {}
        for row in self.rows.get((model, version, role), []):
            by_hour.setdefault(row.hour, []).append(row)
        return {hour: summarize(by_hour[hour]) for hour in sorted(by_hour)}

    def paired(self, model, challenger, incumbent) -> tuple[Summary, Summary]:
        mine = {r.ride_id: r for r in self.rows.get((model, challenger, "shadow"), [])}
        theirs = {r.ride_id: r for r in self.rows.get((model, incumbent, "production"), [])}
        common = sorted(mine.keys() & theirs.keys())
        return summarize([mine[r] for r in common]), summarize([theirs[r] for r in common])


def build(store, drift_counter=None, *, drift_hours: int = 24, now: datetime | None = None) -> Report:
    report = Report()
    versions = sorted(store.versions())
    for model, version, role in versions:
        hours = store.hours(model, version, role)
        report.versions.append(VersionFigures(model, version, role, Summary.total(hours.values()), hours))
    for model, version, role in versions:
        if role != "shadow":
            continue
        for other_model, production, other_role in versions:
            if other_model == model and other_role == "production":
                mine, theirs = store.paired(model, version, production)
                report.comparisons.append(Comparison(model, version, production, mine, theirs))
    if drift_counter is not None:
        now = now or datetime.now(UTC)
        hours = [(now - timedelta(hours=h)).strftime("%Y-%m-%dT%H") for h in range(drift_hours)]
        report.drift = drift_counter.hours(hours)
    return report


def _f(value: float, digits: int = 3) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def format_table(report: Report, hours: int = 6) -> str:
    if not report.versions:
        return "no evaluated predictions yet (the evaluation consumer joins predictions with ride-completed events)"
    lines = [f"{'model':<16} {'version':>7} {'role':<10} {'rides':>8} {'RMSE':>7} {'MAE':>7} {'bias':>7}"]
    for v in report.versions:
        o = v.overall
        lines.append(
            f"{v.model:<16} {v.version:>7} {v.role:<10} {o.count:>8,} {_f(o.rmse):>7} {_f(o.mae):>7} {_f(o.bias):>7}"
        )
    lines.append("")
    lines.append(f"RMSE per drop-off hour (last {hours} hours with rides):")
    for v in report.versions:
        recent = list(v.hours.items())[-hours:]
        trend = "  ".join(f"{hour[5:]}h {_f(s.rmse, 2)} ({s.count})" for hour, s in recent)
        lines.append(f"  {v.model} v{v.version} {v.role}: {trend}")
    for c in report.comparisons:
        lines += [
            "",
            f"shadow v{c.shadow} vs production v{c.production} of {c.model}, on the same "
            f"{c.shadow_figures.count:,} rides:",
            f"  RMSE {_f(c.shadow_figures.rmse)} vs {_f(c.production_figures.rmse)}   "
            f"MAE {_f(c.shadow_figures.mae)} vs {_f(c.production_figures.mae)}   "
            f"bias {_f(c.shadow_figures.bias)} vs {_f(c.production_figures.bias)}",
        ]
    if report.drift:
        latest = max(report.drift)
        lines += ["", f"drift this hour ({latest}Z), PSI against the production model's training data:"]
        for name, (score, n) in sorted(report.drift[latest].items(), key=lambda kv: -(kv[1][0] or 0)):
            flag = "  shifted" if score > 0.25 else "  moving" if score > 0.1 else ""
            lines.append(f"  {name:<16} {_f(score)}  ({n:,} rides){flag}")
    return "\n".join(lines)


def _svg(report: Report, width: int = 720, height: int = 260) -> str:
    """RMSE per hour, one line per version and role (inline SVG: no plotting library)."""
    series = [(f"{v.model} v{v.version} {v.role}", v.hours) for v in report.versions if v.hours]
    hours = sorted({h for _, s in series for h in s})
    values = [s.rmse for _, hs in series for s in hs.values() if s.count]
    if not hours or not values:
        return "<p>No evaluated rides yet.</p>"
    top = max(values) * 1.1 or 1.0
    pad = 40
    x = {h: pad + (width - 2 * pad) * (i / max(1, len(hours) - 1)) for i, h in enumerate(hours)}
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    parts = [
        f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" '
        'font-size="11">',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>',
        f'<line x1="{pad}" y1="{pad / 2}" x2="{pad}" y2="{height - pad}" stroke="#999"/>',
        f'<text x="4" y="{pad / 2 + 4}">{top:.1f}</text><text x="4" y="{height - pad}">0</text>',
        f'<text x="{pad}" y="{height - 8}">{html.escape(hours[0])}Z</text>',
        f'<text x="{width - pad - 90}" y="{height - 8}">{html.escape(hours[-1])}Z</text>',
    ]
    for i, (label, hs) in enumerate(series):
        color = colors[i % len(colors)]
        points = " ".join(
            f"{x[h]:.1f},{height - pad - (height - 1.5 * pad) * s.rmse / top:.1f}"
            for h, s in sorted(hs.items())
            if s.count and not math.isnan(s.rmse)
        )
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        parts.append(
            f'<text x="{width - pad - 200}" y="{pad / 2 + 14 * (i + 1)}" fill="{color}">{html.escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def to_html(report: Report, title: str = "rides: live evaluation") -> str:
    rows = "".join(
        f"<tr><td>{html.escape(v.model)}</td><td>{v.version}</td><td>{v.role}</td><td>{v.overall.count:,}</td>"
        f"<td>{_f(v.overall.rmse)}</td><td>{_f(v.overall.mae)}</td><td>{_f(v.overall.bias)}</td></tr>"
        for v in report.versions
    )
    comparisons = "".join(
        f"<p>shadow v{c.shadow} vs production v{c.production} of {html.escape(c.model)} on the same "
        f"{c.shadow_figures.count:,} rides: RMSE {_f(c.shadow_figures.rmse)} vs {_f(c.production_figures.rmse)}, "
        f"MAE {_f(c.shadow_figures.mae)} vs {_f(c.production_figures.mae)}</p>"
        for c in report.comparisons
    )
    drift = ""
    if report.drift:
        latest = max(report.drift)
        drift = (
            f"<h2>Drift, {latest}Z (PSI against the training data)</h2><table><tr><th>feature</th><th>PSI</th>"
            "<th>rides</th></tr>"
            + "".join(
                f"<tr><td>{html.escape(name)}</td><td>{_f(score)}</td><td>{n:,}</td></tr>"
                for name, (score, n) in sorted(report.drift[latest].items())
            )
            + "</table>"
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>"
        "body{font-family:sans-serif;margin:2em}td,th{padding:2px 10px;text-align:right}</style></head><body>"
        f"<h1>{title}</h1><table><tr><th>model</th><th>version</th><th>role</th><th>rides</th><th>RMSE</th>"
        f"<th>MAE</th><th>bias</th></tr>{rows}</table>{comparisons}<h2>RMSE per drop-off hour</h2>{_svg(report)}"
        f"{drift}</body></html>"
    )
