"""The breaker Lua scripts; ``script(name)`` returns one with the shared prelude (``_lib.lua``) in front."""

from __future__ import annotations

from importlib import resources


def script(name: str) -> str:
    here = resources.files(__name__)
    return here.joinpath("_lib.lua").read_text() + here.joinpath(name).read_text()
