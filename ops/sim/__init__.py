"""A local stand-in for the OpenAI and Anthropic APIs with their real rate-limit behaviour.

Run it with ``gateway sim`` or ``python -m ops.sim``; build it in-process with
``ops.sim.app.create_app(config)``. See /work/notes/sim_readme.md (README section) for the details.
"""
