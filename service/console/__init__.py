"""The web console at ``/console``: watch deliveries, follow one event, try rules, replay.

Server-rendered (Jinja2 templates, plain forms, htmx vendored in ``static/`` only to keep
lists live); off unless ``CALHOOKS_CONSOLE_USERS`` names a user. ``create_console`` is what
``service/app.py`` mounts. Modules: ``app`` (routes, sign-in gate), ``auth`` (sessions,
CSRF, rate limit), ``passwords`` (the users setting, scrypt hashes), ``views`` (the pages),
``eventlist`` (the events query), ``timeline`` (one event), ``reconciliation`` (the
workers' passes, from their records), ``rulesfile``, ``charts`` (SVG).
See docs/console.md.
"""

from calhooks.service.console.app import Console, create_console

__all__ = ["Console", "create_console"]
