"""Payment-timeout example: orders as virtual actors with durable reminders, on a ManualClock.

Run it with `python -m examples.payment_timeout`; see README.md beside this file.
"""
