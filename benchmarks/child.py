"""Run one benchmark function in a fresh process and print its JSON result.

    python -m benchmarks.child MODULE:FUNCTION '{"argument": value}'

Used by `measure.start_child` (memory probes, PostgreSQL nodes). The result is the last stdout
line starting with `measure.RESULT_MARK`, so log output printed meanwhile does not get in its way.
The process ends as soon as the result is out, without waiting for the threads the function left
running: a probe's ten thousand idle actors need no orderly stop.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

from benchmarks.measure import RESULT_MARK


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m benchmarks.child MODULE:FUNCTION JSON_ARGUMENTS", file=sys.stderr)
        return 2
    target, arguments = argv
    module_name, _, function_name = target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(**json.loads(arguments))
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    status = main(sys.argv[1:])
    sys.stderr.flush()
    os._exit(status)
