"""Confluent framing and Avro through fastavro, using only the .avsc files."""
import functools
import io
import json
import os
import struct

import fastavro

from conftest import SCHEMAS

IDS = {"InteractionEvent": 1001, "StageTransition": 1002, "DeadLetter": 1003,
       "ProfileMerge": 1004, "IdentityLink": 1005}


@functools.lru_cache(maxsize=None)
def schema(name):
    with open(os.path.join(SCHEMAS, f"{name}.avsc")) as f:
        return fastavro.parse_schema(json.load(f))


def encode(name, record):
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema(name), record)
    return b"\x00" + struct.pack(">I", IDS[name]) + buf.getvalue()


def decode(name, payload):
    assert payload[0] == 0, "magic byte"
    (sid,) = struct.unpack(">I", payload[1:5])
    assert sid == IDS[name], f"schema id {sid} for {name}"
    buf = io.BytesIO(payload[5:])
    rec = fastavro.schemaless_reader(buf, schema(name), None)
    assert buf.read() == b"", "trailing bytes"
    return rec


def event(event_id, t_ms, channel, event_type, ids, **props):
    return {
        "event_id": event_id, "event_time": t_ms, "channel": channel, "channel_other": None,
        "event_type": event_type, "mode": "online", "touchpoint": "direct",
        "identifiers": [{"type": k, "value": v} for k, v in ids],
        "value": None, "currency": None, "campaign": None,
        "properties": {k: str(v) for k, v in props.items()},
    }
