"""Tables: one row per metric, one column per target, then dari's ratio to each baseline."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: str = ""  # "higher", "lower" or "" (no direction, e.g. a count)
    digits: int = 0
    # dari's ratios compare this row with the baselines' row of this key (a dari-only variant
    # of a measured figure, e.g. capacity with stream_gather_ms); None: the same row.
    versus: str | None = None


@dataclass
class Measured:
    """What a scenario measured for one target."""

    values: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    noisy: set[str] = field(default_factory=set)  # keys measured while the machine was busy

    def put(self, key: str, value: float | None, *, noisy: bool = False) -> None:
        self.values[key] = value
        if noisy:
            self.noisy.add(key)


@dataclass
class Table:
    title: str
    method: str
    metrics: list[Metric]
    results: dict[str, Measured] = field(default_factory=dict)  # by target
    targets: list[str] = field(default_factory=list)  # the columns, in order

    def value(self, target: str, key: str) -> float | None:
        found = self.results.get(target)
        return found.values.get(key) if found else None

    def is_noisy(self, target: str, key: str) -> bool:
        found = self.results.get(target)
        return found is not None and key in found.noisy


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
    has_dari = "dari" in targets and "dari" in table.results
    head = ["metric", *targets]
    if has_dari:
        head += [f"dari÷{b}" for b in baselines]
    rows = [head]
    flagged = False
    for m in table.metrics:
        arrow = {"higher": " ↑", "lower": " ↓"}.get(m.better, "")
        row = [m.label + arrow]
        for t in targets:
            mark = "*" if table.is_noisy(t, m.key) else ""
            flagged = flagged or bool(mark)
            row.append(_fmt(table.value(t, m.key), m.digits) + mark)
        if has_dari:
            dari = table.value("dari", m.key)
            for b in baselines:
                if not m.better:
                    row.append("")
                    continue
                base_key = m.versus or m.key
                noisy = table.is_noisy("dari", m.key) or table.is_noisy(b, base_key)
                row.append(_ratio(dari, table.value(b, base_key)) + ("*" if noisy else ""))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join(
        ("-" * (w + 1) + ":") if i else ("-" * (w + 2)) for i, w in enumerate(widths)
    )
    out = [f"### {table.title}", "", table.method, "", line(rows[0]), sep + "|"]
    out += [line(r) for r in rows[1:]]
    notes = [n for t in targets if t in table.results for n in table.results[t].notes]
    if flagged:
        notes.append(
            "(*) measured while other processes used more than 10 % of the server's core"
            " (shared machine); treat with care"
        )
    if notes:
        out += ["", *[f"- {n}" for n in notes]]
    return "\n".join(out)
