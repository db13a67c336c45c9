"""The guide in `docs/` runs: every ```python block of every page is executed.

Each page's blocks run in order in one shared namespace (a later block uses what an earlier one
defined), as a module of its own, in a fresh temporary working directory that is also first on
`sys.path` (as for a script run there), so the default `plexspaces.db` and any file a block
writes land there. A page has a time limit. After a page, every actor system it created must be
shut down and every thread it started must have ended.

Markers, an HTML comment on the line right before a block's opening fence:

- `<!-- not-run: reason -->`: the block is compiled, never run (a production URL, a fixed port).
- `<!-- file: name.py -->`: the block is also written to `name.py` in the working directory before
  it runs, so later blocks and child processes can import it.

Blocks in other languages (bash, toml, text) are neither run nor required to run.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from plexspaces import ActorSystem, _facet
from plexspaces.testing import leaked_threads

DOCS = Path(__file__).resolve().parent.parent / "docs"
READING_ORDER = [
    "concepts.md",
    "timers-and-reminders.md",
    "virtual-actors.md",
    "delivery-guarantees.md",
    "writing-a-facet.md",
    "postgresql-and-clusters.md",
    "transport.md",
    "several-nodes.md",
    "testing.md",
    "metrics-and-logging.md",
    "cli.md",
    "security.md",
]
PAGE_TIMEOUT_S = 60.0
"""Seconds a page's blocks may take together (they take well under one on a ManualClock)."""
THREAD_GRACE_S = 5.0
"""Seconds to wait for threads a page started to end after its last block."""

_FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*(not-run|file):\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line number of the first line of code
    language: str
    source: str
    marker: str | None = None  # "not-run" or "file"
    argument: str = ""  # the reason, or the file name

    @property
    def where(self) -> str:
        return f"{self.page.name}:{self.line}"

    def compiled(self) -> types.CodeType:
        # Padded so tracebacks and syntax errors name the line of the Markdown file.
        return compile("\n" * (self.line - 1) + self.source, str(self.page), "exec")


def parse_blocks(page: Path) -> list[Block]:
    """Every fenced block of `page`, with the marker on the line before its opening fence."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        start = index + 1
        end = start
        while end < len(lines) and not _FENCE.match(lines[end]):
            end += 1
        if end == len(lines):
            raise AssertionError(f"{page.name}:{index + 1}: a code block is never closed")
        if _FENCE.match(lines[end]).group(1):  # type: ignore[union-attr]
            raise AssertionError(f"{page.name}:{end + 1}: a code block opens inside another")
        marker = _MARKER.match(lines[index - 1]) if index > 0 else None
        blocks.append(
            Block(
                page=page,
                line=start + 1,
                language=opening.group(1).lower(),
                source="\n".join(lines[start:end]) + "\n",
                marker=marker.group(1) if marker else None,
                argument=marker.group(2) if marker else "",
            )
        )
        index = end + 1
    return blocks


def python_blocks(page: Path) -> list[Block]:
    return [block for block in parse_blocks(page) if block.language in ("python", "py")]


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


# -- the runner ------------------------------------------------------------------------------------


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working directory, first on sys.path, with the process state a page may change
    (environment, structlog, imported modules, the facet entry-point cache) restored after."""
    for name in ("PLEXSPACES_STORAGE_URL", "PLEXSPACES_LOG_FORMAT", "PLEXSPACES_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    environment = dict(os.environ)
    structlog_config = structlog.get_config() if structlog.is_configured() else None
    path = list(sys.path)
    modules = set(sys.modules)
    monkeypatch.chdir(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            origin = getattr(sys.modules[name], "__file__", None) or ""
            if origin.startswith(str(tmp_path)):
                del sys.modules[name]
        os.environ.clear()
        os.environ.update(environment)
        if structlog_config is None:
            structlog.reset_defaults()
        else:
            structlog.configure(**structlog_config)
        _facet._refresh()  # forget entry points a page published from its directory


def run_page(page: Path, workdir: Path) -> list[str]:
    """Run the page's runnable python blocks in order in one namespace; the blocks run."""
    blocks = [block for block in python_blocks(page) if block.marker != "not-run"]
    module = types.ModuleType(f"docs_{page.stem.replace('-', '_')}")
    module.__file__ = str(workdir / f"{page.stem}.py")
    sys.modules[module.__name__] = module
    current: list[Block] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            for block in blocks:
                current.append(block)
                if block.marker == "file":
                    (workdir / block.argument).write_text(block.source, encoding="utf-8")
                exec(block.compiled(), module.__dict__)
        except BaseException as error:
            failure.append(error)

    # A daemon thread, so a block that hangs fails the test instead of hanging the run.
    worker = threading.Thread(target=run, name=f"docs-{page.stem}", daemon=True)
    try:
        worker.start()
        worker.join(PAGE_TIMEOUT_S)
        if worker.is_alive():
            where = current[-1].where if current else page.name
            pytest.fail(f"{where}: the page did not finish within {PAGE_TIMEOUT_S:g}s")
        if failure:
            raise AssertionError(f"{current[-1].where}: the block failed") from failure[0]
    finally:
        del sys.modules[module.__name__]
    return [block.where for block in current]


def _wait_for_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    deadline = time.monotonic() + THREAD_GRACE_S
    while True:
        leaked = leaked_threads(before)
        if not leaked or time.monotonic() > deadline:
            return leaked
        leaked[0].join(0.05)


def _systems() -> list[ActorSystem]:
    return [thing for thing in gc.get_objects() if isinstance(thing, ActorSystem)]


# -- tests -----------------------------------------------------------------------------------------


def test_the_index_links_every_page_in_reading_order() -> None:
    """docs/index.md links each page once, in reading order, and every page exists."""
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = re.findall(r"\]\(([\w-]+\.md)\)", index)
    assert linked == READING_ORDER
    assert sorted(path.name for path in pages()) == sorted([*READING_ORDER, "index.md"])


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.name)
def test_every_python_block_of_the_page_runs(page: Path, isolated: Path) -> None:
    """The page's python blocks run in order in one namespace without error, shut down every
    actor system they create and leave no thread running."""
    threads_before = set(threading.enumerate())
    systems_before = {id(system) for system in _systems()}
    try:
        ran = run_page(page, isolated)
    finally:
        # Also after a failing block: its actor threads are not daemons and would keep the
        # test process from exiting.
        open_systems = [
            system
            for system in _systems()
            if id(system) not in systems_before and not system.is_shut_down
        ]
        for system in open_systems:
            system.shutdown(timeout=10)
    assert open_systems == [], f"{page.name}: actor systems left running: {open_systems}"
    leaked = _wait_for_threads(threads_before)
    assert leaked == [], f"{page.name}: threads left running: {leaked}"
    assert len(ran) == len([b for b in python_blocks(page) if b.marker != "not-run"])


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.name)
def test_blocks_that_do_not_run_compile_and_say_why(page: Path) -> None:
    """A not-run block still compiles and gives a reason; a file block names a .py file."""
    for block in python_blocks(page):
        if block.marker == "not-run":
            assert block.argument, f"{block.where}: a not-run marker needs a reason"
            block.compiled()
        elif block.marker == "file":
            assert re.fullmatch(r"[\w-]+\.py", block.argument), f"{block.where}: bad file name"


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.name)
def test_markers_sit_right_before_a_python_block(page: Path) -> None:
    """Every marker comment is on the line right before a python block's fence, so none is
    silently ignored (a blank line between, or a marker on a bash block)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    # block.line is the 1-based line of the block's first line of code; its marker is two up.
    marked = {block.line - 2 for block in python_blocks(page) if block.marker is not None}
    for number, line in enumerate(lines, start=1):
        if _MARKER.match(line):
            assert number in marked, f"{page.name}:{number}: a marker not before ```python"


def test_the_guide_runs_most_of_its_python() -> None:
    """Blocks that are not run stay rare: at most one in ten."""
    blocks = [block for page in pages() for block in python_blocks(page)]
    skipped = [block.where for block in blocks if block.marker == "not-run"]
    assert len(blocks) >= 40
    assert len(skipped) * 10 <= len(blocks), skipped
