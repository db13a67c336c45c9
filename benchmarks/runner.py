"""`python -m benchmarks`: run the scenarios, print one table, write the results."""

from __future__ import annotations

import argparse
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks import actors, fires, mesh, postgres, reminders, timers
from benchmarks.measure import Config, Scenario, ScenarioResult
from benchmarks.report import Entry, console_notes, console_table, machine_info, write_all

SCENARIOS: list[Scenario] = sorted(
    [
        *actors.SCENARIOS,
        *timers.SCENARIOS,
        *reminders.SCENARIOS,
        *fires.SCENARIOS,
        *postgres.SCENARIOS,
        *mesh.SCENARIOS,
    ],
    key=lambda scenario: scenario.number,
)
RESULTS = Path(__file__).resolve().parent / "results"
FULL_ROUNDS = 3
QUICK_ROUNDS = 2


def _parser() -> argparse.ArgumentParser:
    names = ", ".join(f"{scenario.name} ({scenario.number})" for scenario in SCENARIOS)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="PlexSpaces against its peers: each scenario runs for this project and for "
        "its peer, alternating, and reports the median of several rounds against the goals. "
        "Exits 0 when goals are missed (read them from the report), non-zero on an error.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and few rounds, for CI (skips 'postgres' unless --only names it)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only these scenarios (repeatable or comma-separated): {names}",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"rounds per side (default {FULL_ROUNDS}, or {QUICK_ROUNDS} with --quick)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="directory for the JSON, Markdown and chart (default: benchmarks/results)",
    )
    return parser


def _select(parser: argparse.ArgumentParser, only: list[str] | None, quick: bool) -> list[Scenario]:
    if not only:
        return [scenario for scenario in SCENARIOS if scenario.in_quick or not quick]
    wanted = {name.strip() for value in only for name in value.split(",") if name.strip()}
    by_name = {scenario.name: scenario for scenario in SCENARIOS}
    unknown = sorted(wanted - by_name.keys())
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(by_name)}")
    return [scenario for scenario in SCENARIOS if scenario.name in wanted]


def _run(scenario: Scenario, config: Config) -> Entry:
    print(f"[{scenario.number}] {scenario.name}: {scenario.title} ...", flush=True)
    started = time.perf_counter()
    try:
        result = scenario.run(config)
        error = None
    except Exception as failure:
        traceback.print_exc()
        result = ScenarioResult()
        error = f"{type(failure).__name__}: {failure}"
    seconds = time.perf_counter() - started
    print(f"[{scenario.number}] {scenario.name}: done in {seconds:.1f} s", flush=True)
    return Entry(scenario, result, seconds, error)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    scenarios = _select(parser, args.only, args.quick)
    rounds = args.rounds if args.rounds is not None else QUICK_ROUNDS if args.quick else FULL_ROUNDS
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="plexspaces-bench-") as workdir:
        config = Config(quick=args.quick, rounds=rounds, workdir=Path(workdir))
        entries = [_run(scenario, config) for scenario in scenarios]
    machine = machine_info(quick=args.quick, rounds=rounds)
    machine["seconds"] = round(time.perf_counter() - started, 1)
    print()
    print(console_table(entries))
    print()
    print(console_notes(entries))
    print()
    stem = "quick" if args.quick else "partial" if args.only else "latest"
    write_all(entries, machine, args.results, stem)
    print(f"total {machine['seconds']:.0f} s ({machine['mode']} mode, {rounds} rounds)")
    failed = [entry.scenario.name for entry in entries if entry.error]
    if failed:
        print(f"benchmarks: error in {', '.join(failed)}")
        return 1
    return 0
