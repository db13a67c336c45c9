"""The checking harness every example's `test.sh` shares.

A `test.sh` runs its example, saves what it printed, and hands the file and exit status to a short
Python check that starts with `OutputCheck`: it strips colours, checks the exit status (and, for an
example that prints one, the one `SUMMARY {json}` line), and keeps the tally of PASS and FAIL
lines. The example-specific checks
follow, and `finish()` ends with the exit status CI reads.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, NoReturn

_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


class OutputCheck:
    """Checks of one run's output; every check prints a PASS or FAIL line.

    Args:
        name: what the final line calls the run ("payment_timeout").
        path: the file holding what the example printed.
        status: the example's exit status.
        tag: put before every label ("[timed] "), to tell runs of one script apart.
        summary: whether the example prints a `SUMMARY {json}` line to check and parse.
    """

    def __init__(
        self, name: str, path: str, status: int | str, tag: str = "", *, summary: bool = True
    ) -> None:
        self.name = name
        self.tag = tag
        self.failures = 0
        with open(path, encoding="utf-8") as handle:
            # Plain text even if colours were forced on.
            self.lines = [_COLOUR.sub("", line) for line in handle]
        status = int(status)
        self.check("example exited with status 0", status == 0, f"got {status}")
        self.summary: dict[str, Any] = {}
        if not summary:
            return
        summaries = [line[len("SUMMARY ") :] for line in self.lines if line.startswith("SUMMARY ")]
        self.check("exactly one SUMMARY line", len(summaries) == 1, f"got {len(summaries)}")
        try:
            self.summary = json.loads(summaries[-1])
        except (IndexError, ValueError) as error:
            self.check("SUMMARY is JSON", False, str(error))

    def check(self, label: str, ok: bool, detail: str = "") -> bool:
        if not ok:
            self.failures += 1
        print(f"{'PASS' if ok else 'FAIL'}: {self.tag}{label}" + (f" ({detail})" if detail else ""))
        return ok

    def equal(self, label: str, got: Any, want: Any) -> bool:
        return self.check(label, got == want, "" if got == want else f"got {got!r}, want {want!r}")

    def within(self, label: str, value: Any, low: int, high: int) -> bool:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return self.check(f"{label} in {low}..{high}", ok, f"got {value!r}")

    def matching(self, pattern: str) -> list[str]:
        """The lines (without their newline) in which the regular expression `pattern` occurs."""
        regex = re.compile(pattern)
        return [line.rstrip("\n") for line in self.lines if regex.search(line)]

    def has_lines(self, label: str, expected: list[str]) -> bool:
        """Every line of `expected` was printed exactly, in this order (other lines between).

        Consecutive expected lines that start with the same word (the same virtual time) may
        come in any order among themselves: they were printed by different actors' threads at
        one instant, and those run side by side."""
        printed = [line.rstrip("\n") for line in self.lines]
        position = 0
        for group in _by_first_word(expected):
            found = []
            for want in group:
                try:
                    found.append(printed.index(want, position))
                except ValueError:
                    return self.check(label, False, f"missing or out of order: {want!r}")
            position = max(found) + 1
        return self.check(label, True)

    def finish(self) -> NoReturn:
        """Print the verdict and exit: 0 if every check passed, 1 otherwise."""
        if self.failures:
            print(f"{self.name}: FAILED ({self.failures} check(s))")
            sys.exit(1)
        print(f"{self.name}: all checks passed")
        sys.exit(0)


def _by_first_word(lines: list[str]) -> list[list[str]]:
    groups: list[list[str]] = []
    for line in lines:
        word = line.split(" ", 1)[0]
        if groups and groups[-1][0].split(" ", 1)[0] == word:
            groups[-1].append(line)
        else:
            groups.append([line])
    return groups
