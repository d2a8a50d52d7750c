"""Serializer fields for JSON bodies that take only their own JSON type.

DRF's fields are lenient the way HTML forms need: `"2"` and `2.0` are integers, `0` is the text "0". A JSON
API should say what it takes and refuse the rest with a 400 naming the field.
"""

from typing import Any

from rest_framework import serializers


class JSONIntegerField(serializers.IntegerField):
    """An integer in a JSON body: `2`, not `2.0`, `"2"` or `true`."""

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class JSONCharField(serializers.CharField):
    """Text in a JSON body: a string, not a number or a boolean turned into one."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class JSONBooleanField(serializers.BooleanField):
    """A boolean in a JSON body: `true` or `false`, not `0`, `"yes"` or `"true"`."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data
