"""The report: a console table, JSON, a Markdown table and a chart of lateness distributions."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.measure import NOTHING, ROOT, TIMES, Metric, Scenario, ScenarioResult

HEADERS = ("metric", "this project", "peer", "ratio", "goal", "result")


@dataclass(frozen=True)
class Entry:
    """One scenario that ran, with its result and how long it took."""

    scenario: Scenario
    result: ScenarioResult
    seconds: float
    error: str | None = None


def machine_info(*, quick: bool, rounds: int) -> dict[str, Any]:
    """What the numbers depend on: the machine, the software, the mode."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "rounds": rounds,
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": _memory_gib(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "commit": _git_commit(),
        "versions": {name: _version(name) for name in ("pykka", "SQLAlchemy", "APScheduler")},
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])  # MemTotal
    except (OSError, ValueError, IndexError):
        return None
    return round(kib / 2**20, 1)


def _git_commit() -> str | None:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "plexspaces", "facets")
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit} (plus uncommitted changes to the core)" if dirty else commit


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


# -- formatting ----------------------------------------------------------------------------------


def format_value(value: float | None, unit: str, missing: str) -> str:
    if value is None:
        return missing
    if unit in ("µs", "ms", "s"):
        digits = 3 if abs(value) < 1 else 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
        return f"{value:,.{digits}f} {unit}"
    if unit == "count":
        return f"{value:,.0f}"
    if unit == "B" and value >= 2**20:
        return f"{value / 2**20:,.1f} MiB"
    if unit == "B" and value >= 10 * 2**10:
        return f"{value / 2**10:,.1f} KiB"
    return f"{value:,.0f} {unit}"


def format_ratio(ratio: float | None) -> str:
    if ratio is None:
        return NOTHING
    digits = 3 if ratio < 0.1 else 2 if ratio < 10 else 1
    return f"{ratio:.{digits}f}{TIMES}"


def _cells(metric: Metric, not_met: str) -> tuple[str, ...]:
    status = metric.status
    return (
        metric.label,
        format_value(metric.project, metric.unit, NOTHING),
        format_value(metric.peer, metric.unit, metric.peer_missing),
        format_ratio(metric.ratio),
        metric.goal.label if metric.goal is not None else NOTHING,
        not_met if status == "not met" else status,
    )


def _heading(entry: Entry) -> str:
    scenario = entry.scenario
    return f"{scenario.number}. {scenario.title}  [peer: {scenario.peer}]"


def console_table(entries: list[Entry]) -> str:
    rows = [_cells(metric, "NOT MET") for entry in entries for metric in entry.result.metrics]
    widths = [max(len(row[i]) for row in [HEADERS, *rows]) for i in range(len(HEADERS))]

    def line(cells: tuple[str, ...]) -> str:
        return "   " + "  ".join(
            cell.ljust(width) for cell, width in zip(cells, widths, strict=True)
        )

    out = [line(HEADERS), "   " + "  ".join("-" * width for width in widths)]
    for entry in entries:
        out.append(_heading(entry) + (f"  -- ERROR: {entry.error}" if entry.error else ""))
        out.extend(line(_cells(metric, "NOT MET")) for metric in entry.result.metrics)
    return "\n".join(out)


def console_notes(entries: list[Entry]) -> str:
    out = []
    for entry in entries:
        for note in entry.result.notes:
            out.append(f"[{entry.scenario.number}] {note}")
    return "\n".join(out)


def markdown(entries: list[Entry], machine: dict[str, Any], chart: str | None) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    out = [
        f"Benchmarks, {machine['mode']} mode, {machine['date']}: {machine['cpu_count']} CPUs "
        f"({machine['cpu']}), {machine['memory_gib']} GiB, {machine['python']}, "
        f"{machine['platform']}; commit {machine['commit']}; {versions}. Each figure is the "
        f"median of {machine['rounds']} rounds unless a note says otherwise.",
        "",
        "| scenario [peer] | metric | this project | peer | ratio | goal | result |",
        "|---|---|--:|--:|--:|---|---|",
    ]
    for entry in entries:
        heading = f"{entry.scenario.number}. {entry.scenario.title} [{entry.scenario.peer}]"
        if entry.error:
            out.append(f"| {heading} | error: {entry.error} | | | | | |")
            continue
        for index, metric in enumerate(entry.result.metrics):
            cells = _cells(metric, "**not met**")
            out.append(f"| {heading if index == 0 else ''} | " + " | ".join(cells) + " |")
    out += ["", "Notes:", ""]
    for entry in entries:
        out.extend(f"- [{entry.scenario.number}] {note}" for note in entry.result.notes)
    if chart is not None:
        out += ["", f"![Lateness distributions]({chart})"]
    return "\n".join(out) + "\n"


def as_json(entries: list[Entry], machine: dict[str, Any]) -> str:
    scenarios = []
    for entry in entries:
        scenarios.append(
            {
                "number": entry.scenario.number,
                "name": entry.scenario.name,
                "title": entry.scenario.title,
                "peer": entry.scenario.peer,
                "seconds": round(entry.seconds, 2),
                "error": entry.error,
                "notes": entry.result.notes,
                "metrics": [
                    {
                        "metric": metric.label,
                        "unit": metric.unit,
                        "project": metric.project,
                        "peer": metric.peer,
                        "ratio": metric.ratio,
                        "goal": metric.goal.label if metric.goal is not None else None,
                        "result": metric.status,
                    }
                    for metric in entry.result.metrics
                ],
            }
        )
    return json.dumps({"machine": machine, "scenarios": scenarios}, indent=2) + "\n"


# -- the chart -----------------------------------------------------------------------------------

_FLOOR_MS = 0.001
"""Lateness is drawn on a log axis: anything at or below 1 µs is drawn at 1 µs."""
_CHART_COLUMNS = 2
"""Panels per row of the chart."""


def write_chart(entries: list[Entry], path: Path) -> str | None:
    """Draw the lateness distributions (one panel per scenario with samples) to `path`; None if
    there was nothing to draw or matplotlib is not installed (a line says so)."""
    panels = [entry for entry in entries if entry.result.samples]
    if not panels:
        return None
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
        from matplotlib.ticker import (  # type: ignore[import-not-found, unused-ignore]
            FuncFormatter,
            LogLocator,
            NullFormatter,
        )
    except ImportError:
        print("chart skipped: matplotlib is not installed (pip install matplotlib)")
        return None
    columns = min(len(panels), _CHART_COLUMNS)
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.5 * rows), squeeze=False)
    cells = [axis for row in axes for axis in row]
    for axis in cells[len(panels) :]:
        axis.set_visible(False)
    for axis, entry in zip(cells, panels, strict=False):
        for series, samples in entry.result.samples.items():
            ordered = sorted(max(sample, _FLOOR_MS) for sample in samples)
            step = max(1, len(ordered) // 2000)
            xs = [*ordered[::step], ordered[-1]]
            # The fraction of samples at or below each drawn value.
            ys = [(index + 1) / len(ordered) for index in range(0, len(ordered), step)] + [1.0]
            axis.step(xs, ys, where="post", label=f"{series} (n={len(ordered):,})")
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("lateness when handled (ms, log scale)")
        axis.set_ylabel("fraction handled within")
        axis.set_title(f"{entry.scenario.number}. {entry.scenario.title}", fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path.name


def write_all(entries: list[Entry], machine: dict[str, Any], directory: Path, stem: str) -> None:
    """Write `<stem>.json`, `<stem>.md` and `<stem>-lateness.png` into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    chart = write_chart(entries, directory / f"{stem}-lateness.png")
    (directory / f"{stem}.json").write_text(as_json(entries, machine))
    (directory / f"{stem}.md").write_text(markdown(entries, machine, chart))
    written = [f"{stem}.json", f"{stem}.md", *([chart] if chart else [])]
    where = directory.relative_to(ROOT) if directory.is_relative_to(ROOT) else directory
    print(f"written to {where}: {', '.join(written)}")
