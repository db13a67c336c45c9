"""`python -m benchmarks`: see `benchmarks.runner` and benchmarks/README.md."""

from benchmarks.runner import main

raise SystemExit(main())
