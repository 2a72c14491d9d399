"""The wire between the server and its writer process (`server.writer_process`).

Length-prefixed pickled frames over a socket pair. A frame from the server is a list of
requests, each a tuple starting with its kind and a request number; a frame from the writer is
("ready", pid), ("failed", reason) or ("answers", [(number, ok, value), ...], groups, items),
where `value` is the request's result, or its error when `ok` is false.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, NamedTuple

HEADER = struct.Struct("!I")
_MAX_FRAME = 0xFFFF_FFFF
PICKLE = pickle.HIGHEST_PROTOCOL

# Request kinds, server to writer.
ONE = 0  # a unary batchable command: committed with whatever else is queued
ALONE = 1  # a command in a transaction of its own
BATCH = 2  # a RecordBatch call: its commands in one transaction
MANY = 3  # commands of possibly several principals in one transaction (policy notices)
STOP = 4  # finish what was sent, answer it, exit
FORWARD = 5  # a forwarded call's bytes (`server.forwarding`): committed with the unary ones
GROUPED = (ONE, FORWARD)


def framed(message: object) -> bytes:
    """`message` pickled, behind its length."""
    body = pickle.dumps(message, PICKLE)
    if len(body) > _MAX_FRAME:
        msg = "a frame for the writer outgrew 4 GiB"
        raise ValueError(msg)
    return HEADER.pack(len(body)) + body


class Frames:
    """Splits a byte stream into the frames `framed` made."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        messages: list[Any] = []
        start = 0
        size = HEADER.size
        while len(buffer) - start >= size:
            (length,) = HEADER.unpack_from(buffer, start)
            if len(buffer) - start - size < length:
                break
            body = memoryview(buffer)[start + size : start + size + length]
            messages.append(pickle.loads(body))  # noqa: S301 (our own child, over a socket pair)
            body.release()
            start += size + length
        if start:
            del buffer[:start]
        return messages


class Forwarded(NamedTuple):
    """The writer's answer to a forwarded call: the response's bytes, and what the server
    needs to know of it (the position reached; whether a policy was published)."""

    response: bytes
    position: int
    event_type: str
