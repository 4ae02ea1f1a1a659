"""`journey replay` reads Avro container files written by an independent implementation (fastavro)."""
import json
import subprocess

import fastavro

from avro_util import schema
from conftest import BIN

CHANNELS = {"web", "mobile_app", "email", "sms", "social", "paid_search", "organic_search",
            "display_ads", "review_site", "store", "call_center", "chat"}


def to_avro(e):
    known = e["channel"] in CHANNELS
    return {
        "event_id": e["event_id"], "event_time": e["time"],
        "channel": e["channel"] if known else "other", "channel_other": None if known else e["channel"],
        "event_type": e["event_type"], "mode": "offline" if e["offline"] else "online",
        "touchpoint": "direct" if e["direct"] else "indirect",
        "identifiers": e["identifiers"], "value": e["value"], "currency": e["currency"],
        "campaign": e["campaign"], "properties": e["properties"],
    }


def test_replay_of_an_avro_container_file_equals_json_lines(tmp_path):
    jsonl = tmp_path / "events.jsonl"
    subprocess.run([BIN, "produce", "--to-file", str(jsonl), "--count", "2000", "--customers", "150",
                    "--malformed", "0"], check=True, capture_output=True)
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    avro = tmp_path / "events.avro"
    with open(avro, "wb") as f:
        fastavro.writer(f, schema("InteractionEvent"), [to_avro(e) for e in events], codec="deflate")
    a = subprocess.run([BIN, "replay", str(jsonl)], check=True, capture_output=True, text=True)
    b = subprocess.run([BIN, "replay", str(avro)], check=True, capture_output=True, text=True)
    assert len(a.stdout.splitlines()) > 100
    assert a.stdout == b.stdout
    assert "0 invalid" in b.stderr, b.stderr
    broken = tmp_path / "broken.avro"
    broken.write_bytes(avro.read_bytes()[:40])
    r = subprocess.run([BIN, "replay", str(broken)], capture_output=True, text=True)
    assert r.returncode != 0 or "refused" in r.stderr, r.stderr
