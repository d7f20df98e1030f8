"""Agent tools and call control. ``spec``: tool declarations from the agents file and the
built-ins; ``signing``: the request signature; ``control`` and ``keypad``: sans-I/O, used
by the Call (tool calls, end_call, keypad digits, silence); ``executor``: the HTTP calls,
owned by the runner; ``demo_endpoint``: the tool endpoint of ``bridge simulate``."""
