"""calhooks' MCP server: the 37 Cal.com organization tools with a connection (PCID) per call.

* ``catalog`` - registry tools as MCP tools (schemas, annotations);
* ``connections`` - the PCID -> credentials store (Redis, encrypted at rest);
* ``tenants`` - bearer tokens and the tenant each stands for;
* ``results`` - Cal.com answers and errors as MCP tool results;
* ``server`` - the low-level SDK server and its ``tools/list`` / ``tools/call``;
* ``http`` - streamable HTTP at ``/cal-organizations`` (stateless, JSON, bearer auth):
  ``create_mcp_app``, ``mcp_routes``, ``create_standalone_app``;
* ``stdio`` - ``calhooks mcp``.

Nothing is re-exported here: ``calhooks connections`` imports ``calhooks.service.connections``
without paying for the MCP SDK, which only ``server``, ``http`` and ``stdio`` load.
"""
