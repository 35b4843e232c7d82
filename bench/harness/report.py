"""Tables: one row per metric, one column per target, then dari's ratio to each baseline."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: str = ""  # "higher", "lower" or "" (no direction, e.g. a count)
    digits: int = 0


@dataclass
class Table:
    title: str
    method: str
    metrics: list[Metric]
    values: dict[str, dict[str, float | None]] = field(default_factory=dict)  # target -> key
    notes: list[str] = field(default_factory=list)


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _ratio(dari: float | None, base: float | None) -> str:
    if dari is None or base is None or base == 0:
        return "-"
    return f"{dari / base:.2f}×"


def render(table: Table, targets: list[str]) -> str:
    """A Markdown table that also reads well as plain text."""
    baselines = [t for t in targets if t != "dari"]
    has_dari = "dari" in targets and "dari" in table.values
    head = ["metric", *targets]
    if has_dari:
        head += [f"dari÷{b}" for b in baselines]
    rows = [head]
    for m in table.metrics:
        arrow = {"higher": " ↑", "lower": " ↓"}.get(m.better, "")
        row = [m.label + arrow]
        for t in targets:
            row.append(_fmt(table.values.get(t, {}).get(m.key), m.digits))
        if has_dari:
            dari = table.values["dari"].get(m.key)
            for b in baselines:
                row.append(_ratio(dari, table.values.get(b, {}).get(m.key)) if m.better else "")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    sep = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if i else ("-" * (w + 2)) for i, w in enumerate(widths))
        + "|"
    )
    out = [f"### {table.title}", "", table.method, "", line(rows[0]), sep]
    out += [line(r) for r in rows[1:]]
    if table.notes:
        out += ["", *[f"- {n}" for n in table.notes]]
    return "\n".join(out)
