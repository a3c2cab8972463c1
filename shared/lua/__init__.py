"""Every Lua script the gateway runs in Redis, in this one folder, named ``<concept>_<verb>.lua``.

Each script's header documents its KEYS and ARGV; scripts touch only the keys they are given (every
key shape is built in ``shared.keys``). ``script(name)`` returns a script ready to load: the shared
helpers (``common.lua``: fmt, clock) and its family's prelude (``<concept>_lib.lua``, when there is
one) put in front of it.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

_HERE = resources.files(__name__)


@cache
def script(name: str) -> str:
    """The source of ``<name>.lua`` with its preludes, e.g. ``script("budget_reserve")``."""
    family = name.split("_", 1)[0]
    lib = _HERE.joinpath(f"{family}_lib.lua")
    parts = [_HERE.joinpath("common.lua").read_text()] if lib.is_file() else []
    if lib.is_file():
        parts.append(lib.read_text())
    parts.append(_HERE.joinpath(f"{name}.lua").read_text())
    return "".join(parts)
