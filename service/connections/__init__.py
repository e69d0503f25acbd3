"""Connections: the Cal.com organizations calhooks works for, each with its credentials.

* ``store`` - ``ConnectionStore``: one Cal.com account and organization per connection, kept
  encrypted in Redis and named by an opaque PCID;
* ``tenants`` - the groups connections belong to, and their names.

The MCP server picks a connection per tool call; the intake, subscriptions and workers use
it as the unit of the whole pipeline. Nothing is re-exported here, so a command that only
needs a tenant name does not load the store (and with it httpx and redis).
"""
