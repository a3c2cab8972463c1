"""The breaker Lua scripts; ``script(name)`` returns one with its prelude (``_lib.lua``) in front."""

from __future__ import annotations

from shared.lua import with_prelude


def script(name: str) -> str:
    return with_prelude(__name__, name)
