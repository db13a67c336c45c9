"""PlexSpaces against its peers (raw pykka, a bare heapq scheduler, threading.Timer, APScheduler).

Run `python -m benchmarks` (or `--quick`, `--only NAME`); see benchmarks/README.md.
"""
