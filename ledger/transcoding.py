"""How events are stored: JSON written by orjson, pydantic payloads embedded as their own JSON.

Stored bytes stay plain JSON that the library's own decoder reads, with each payload tagged by
its class name; encoding goes through orjson and pydantic's serializer, the write path's hot
spot otherwise.
"""

from __future__ import annotations

from typing import Any, cast

import orjson
from eventsourcing.persistence import JSONTranscoder, Transcoding
from pydantic import BaseModel, TypeAdapter


class ModelTranscoding(Transcoding):
    """Stores a pydantic model as its JSON, named after its class."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.type = model
        self.name = model.__name__

    def encode(self, obj: Any) -> Any:
        return orjson.Fragment(cast("BaseModel", obj).model_dump_json())

    def decode(self, data: Any) -> Any:
        return cast("type[BaseModel]", self.type).model_validate(data)


class DataclassTranscoding(Transcoding):
    """Stores a dataclass (nested dataclasses, sets, datetimes) as JSON, through pydantic."""

    def __init__(self, kind: type[Any]) -> None:
        self.type = kind
        self.name = kind.__name__
        self._adapter: TypeAdapter[Any] = TypeAdapter(kind)

    def encode(self, obj: Any) -> Any:
        return orjson.Fragment(self._adapter.dump_json(obj))

    def decode(self, data: Any) -> Any:
        return self._adapter.validate_python(data)


class OrjsonTranscoder(JSONTranscoder):
    """The library's JSON transcoder, encoding with orjson.

    Datetimes are passed through to the registered transcodings (as the library does), so
    they round-trip as datetimes rather than strings.
    """

    def encode(self, obj: Any) -> bytes:
        options = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
        return orjson.dumps(obj, default=self._encode_obj, option=options)
