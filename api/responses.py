"""JSON responses rendered by orjson: several times faster than the standard library on job views.

FastAPI deprecated its own ``ORJSONResponse`` (it now serialises typed return values itself); the
routes here return prepared dicts with headers, so they keep a response class of their own.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
