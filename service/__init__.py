"""calhooks intake: the web side (webhook intake, health, metrics, MCP) and shared plumbing.

Architecture: intake (``service``) -> queue (arq on Redis) -> reactions (``workers``) ->
Cal.com tools (``calhooks.service.calcom``).
"""
