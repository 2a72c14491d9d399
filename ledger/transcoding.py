"""How events are stored: JSON written by orjson, pydantic payloads embedded as their own JSON.

Stored bytes stay plain JSON that the library's own decoder reads, with each payload tagged by
its class name; encoding goes through orjson and pydantic's serializer, the write path's hot
spot otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import orjson
from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent, Transcoding
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


class PayloadReader:
    """Reads the pydantic payload of a stored event, for readers that want only the payload.

    The library's mapper rebuilds the whole domain event: Python's `json` with an object hook
    called for every JSON object, then the event class by topic. The payload is stored as
    ``{"payload": {"_type_": <model name>, "_data_": <the model's own JSON>}}`` (see
    `ModelTranscoding`), so when the stored state is plain JSON (no compressor, no cipher) this
    parses it with orjson and validates the tagged data with its model: the same model as the
    mapper's, from the same data, at about a third of the cost. Anything else (an event with no
    payload, an unknown tag, a compressed or enciphered store) goes through the mapper.
    """

    def __init__(self, mapper: Mapper[Any], models: Iterable[type[BaseModel]]) -> None:
        self._mapper = mapper
        self._models = {model.__name__: model for model in models}
        self._direct = mapper.compressor is None and mapper.cipher is None

    def __call__(self, stored: StoredEvent) -> BaseModel | None:
        """The stored event's payload, or None when it has no pydantic payload."""
        if self._direct:
            try:
                tagged = orjson.loads(stored.state)["payload"]
                model = self._models[tagged["_type_"]]
                data = tagged["_data_"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                pass
            else:
                return model.model_validate(data)
        payload = getattr(self._mapper.to_domain_event(stored), "payload", None)
        return payload if isinstance(payload, BaseModel) else None
