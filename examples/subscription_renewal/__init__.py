"""Subscription-renewal example: 30-day renewals and 23-day reminders as durable reminders.

Run it with `python -m examples.subscription_renewal`; see README.md beside this file.
"""
