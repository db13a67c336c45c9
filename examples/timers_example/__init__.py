"""Timers example: one actor, three in-memory timers on `TimerFacet`.

Run it with `python -m examples.timers_example --duration 8`; see README.md beside this file.
"""
