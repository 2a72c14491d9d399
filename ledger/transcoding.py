"""How events are stored: JSON written by orjson, pydantic payloads embedded as their own JSON.

Stored bytes stay plain JSON that the library's own decoder reads, with each payload tagged by
its class name; encoding goes through orjson and pydantic's serializer, the write path's hot
spot otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast
from uuid import UUID

import orjson
from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent, Transcoding
from eventsourcing.utils import get_topic
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


class DirectMapper(Mapper[UUID]):
    """The library's mapper, writing the common event shape's JSON directly.

    An event of the ledger's aggregates holds its id, version, timestamp and a pydantic
    payload; its stored state is ``{"timestamp": <datetime_iso>, "payload": <ModelTranscoding>}``
    as the transcoder writes it. Without a compressor or cipher, this writes exactly those bytes
    in one join (the transcoder's callbacks for the two values cost more than the JSON); any
    other event, or a store with either, goes through the library's mapper.
    """

    def __init__(self, *args: Any, models: Iterable[type[BaseModel]] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._direct = self.compressor is None and self.cipher is None
        self._tags = {model: b'"payload":{"_type_":"' + model.__name__.encode() for model in models}

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        state = domain_event.__dict__
        if self._direct and state.keys() == _SHAPE:
            payload = state["payload"]
            tag = self._tags.get(type(payload))
            timestamp = state["timestamp"]
            if (
                tag is not None
                and type(timestamp) is datetime
                and getattr(type(domain_event), "class_version", 1) == 1
            ):
                body = b"".join(
                    (
                        b'{"timestamp":{"_type_":"datetime_iso","_data_":"',
                        timestamp.isoformat().encode(),
                        b'"},',
                        tag,
                        b'","_data_":',
                        payload.__pydantic_serializer__.to_json(payload),
                        b"}}",
                    )
                )
                return StoredEvent(
                    originator_id=state["originator_id"],
                    originator_version=state["originator_version"],
                    topic=get_topic(type(domain_event)),
                    state=body,
                )
        return super().to_stored_event(domain_event)


_SHAPE = {"originator_id", "originator_version", "timestamp", "payload"}


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
