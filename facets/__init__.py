"""Facets shipped with PlexSpaces, one module each: `facets.timer` (in-memory timers),
`facets.reminder` (durable reminders) and `facets.virtual_actor` (idle deactivation).

Each is also published by name under the `plexspaces.facets` entry-point group, so
`actor.attach_facet("timer")` works without importing this package.
"""
