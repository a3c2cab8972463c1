"""Lua scripts next to the Python that loads them; ``with_prelude`` builds one with its helpers."""

from __future__ import annotations

from importlib import resources


def with_prelude(package: str, name: str) -> str:
    """``_common.lua`` (fmt, clock), then the package's own ``_lib.lua``, then the script ``name``."""
    here = resources.files(package)
    common = resources.files(__name__).joinpath("_common.lua").read_text()
    return common + here.joinpath("_lib.lua").read_text() + here.joinpath(name).read_text()
