"""The one JSON reader for request bodies: the API (as DRF's parser) and the provider webhooks.

Whatever the body, the answer is a clear 4xx: not JSON, not UTF-8, NaN, or nested deeper than any of our
documents go (a body of `[[[[...` used to exhaust Python's recursion and answer 500).
"""

import json
from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

# Our deepest document is an order: {"items": [{"dish": 1}]}. Anything much deeper is not for us.
MAX_DEPTH = 32


class BadJSON(ValueError):
    """The body is not a JSON document we accept; the message says why."""


def _refuse_constant(name: str) -> None:
    raise BadJSON(f"{name} is not valid JSON")


def loads(body: bytes | str) -> Any:
    """Parse a JSON body; BadJSON for anything that is not strict JSON within MAX_DEPTH levels."""
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadJSON(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except UnicodeDecodeError:
        raise BadJSON("the body is not UTF-8") from None
    except ValueError as error:  # JSONDecodeError, and BadJSON from parse_constant
        raise BadJSON(str(error)) from None
    if depth_over(data, MAX_DEPTH):
        raise BadJSON(f"JSON nested deeper than {MAX_DEPTH} levels")
    return data


def depth_over(data: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit` (iterative: no recursion to exhaust)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        if depth > limit:
            return True
        stack.extend((item, depth + 1) for item in value if isinstance(item, dict | list))
    return False


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with our limits. Bodies of any other media type get 415 (no other parser)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return loads(stream.read() if stream is not None else b"")
        except BadJSON as error:
            raise ParseError(f"JSON parse error - {error}") from None
