"""Reminders example: durable reminders that survive deactivation and a SIGKILL, on the real clock.

Run it with `python -m examples.reminders_example`; see README.md beside this file.
"""
