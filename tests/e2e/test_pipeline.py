"""End to end against the real broker and the real `journey` binary."""
import datetime
import subprocess
import time

import pytest

from avro_util import decode, encode, event
from conftest import BIN, produce, read_all

T0 = 1_767_225_600_000  # 2026-01-01
DAY = 86_400_000


def journey_events():
    """Three customers; one links an anonymous cookie to an e-mail on another key."""
    return [
        ("anonymous_id:c1", event("e1", T0, "display_ads", "ad_click", [("anonymous_id", "c1")])),
        ("anonymous_id:c1", event("e2", T0 + 1000, "web", "product_view", [("anonymous_id", "c1")])),
        ("email:ana@x.io", event("e3", T0 + 2000, "web", "purchase", [("anonymous_id", "c1"), ("email", "ana@x.io")])),
        ("customer_id:C-17", event("e4", T0 + 3000, "store", "purchase", [("customer_id", "C-17")])),
        ("customer_id:C-17", event("e5", T0 + 4000, "review_site", "review_written", [("customer_id", "C-17")], rating=5)),
        ("phone:+100", event("e6", T0 + 5000, "call_center", "support_call", [("phone", "+100")])),
    ]


def test_events_in_transitions_out_decoded_by_fastavro(topics, worker_factory):
    w = worker_factory(topics)
    events = [(k.encode(), encode("InteractionEvent", e)) for k, e in journey_events()]
    # The cookie's visits first; the purchase that links it to an e-mail is keyed
    # (and partitioned) by the e-mail, so stitching crosses partitions.
    produce(topics.bootstrap, topics.input, events[:2])
    assert len(read_all(topics.bootstrap, topics.transitions, expect=2)) == 2
    produce(topics.bootstrap, topics.input, events[2:])
    msgs = read_all(topics.bootstrap, topics.transitions, expect=5)
    w.terminate()
    got = sorted((decode("StageTransition", m.value()) for m in msgs), key=lambda t: (t["customer_key"], t["sequence"]))
    by_key = {}
    for t in got:
        by_key.setdefault(t["customer_key"], []).append((t["from_stage"], t["to_stage"]))
    assert by_key["customer_id:C-17"] == [(None, "purchase"), ("purchase", "advocacy")]
    assert by_key["anonymous_id:c1"] == [(None, "awareness"), ("awareness", "consideration")]
    assert by_key["email:ana@x.io"] == [("consideration", "purchase")]
    assert "phone:+100" not in by_key, "a support call matches no rule"
    ana = [t for t in got if t["customer_key"] == "email:ana@x.io"][0]
    assert ana["sequence"] == 3 and ana["transition_id"] == "email:ana@x.io|funnel5|3"
    assert {"type": "anonymous_id", "value": "c1"} in ana["identifiers"]
    assert isinstance(ana["event_time"], datetime.datetime)
    # Records are keyed by customer key and carry filterable headers.
    m = [m for m in msgs if m.key() == b"customer_id:C-17"][1]
    headers = dict((k, v.decode()) for k, v in m.headers())
    assert headers["model"] == "funnel5" and headers["from"] == "purchase" and headers["to"] == "advocacy"
    merges = read_all(topics.bootstrap, topics.merges, expect=1)
    assert [decode("ProfileMerge", m.value())["absorbed_key"] for m in merges] == ["anonymous_id:c1"]


def test_garbage_goes_to_dead_letters_and_the_worker_goes_on(topics, worker_factory):
    w = worker_factory(topics)
    good = encode("InteractionEvent", event("g1", T0, "store", "purchase", [("customer_id", "C-1")]))
    no_ids = encode("InteractionEvent", event("g2", T0, "web", "page_view", []))
    blocked = encode("InteractionEvent", event("g3", T0, "web", "page_view", [("email", "null")]))
    wrong_id = b"\x00\x00\x00\x27\x0f" + good[5:]
    garbage = [(b"k", b"not avro at all"), (b"k", wrong_id), (b"k", good[:-6]), (b"k", no_ids), (b"k", blocked), (b"k", good + b"\x01\x02")]
    produce(topics.bootstrap, topics.input, garbage)
    dead = read_all(topics.bootstrap, topics.dead_letters, expect=len(garbage))
    produce(topics.bootstrap, topics.input, [(b"C-1", good)])
    out = read_all(topics.bootstrap, topics.transitions, expect=1)
    assert w.alive(), w.output()
    w.terminate()
    letters = [decode("DeadLetter", m.value()) for m in dead]
    reasons = sorted(d["reason"] for d in letters)
    assert reasons == sorted(["not_confluent_framed", "unknown_schema_id", "invalid_avro", "no_identifier",
                              "all_identifiers_blocked", "trailing_bytes"]), reasons
    originals = {d["original_value"] for d in letters}
    assert originals == {v for _, v in garbage}, "original bytes are kept"
    assert all(d["source_topic"] == topics.input and d["source_offset"] >= 0 for d in letters)
    assert [decode("StageTransition", m.value())["to_stage"] for m in out] == ["purchase"]


def test_sigterm_exits_cleanly_and_commits(topics, worker_factory):
    w = worker_factory(topics)
    produce(topics.bootstrap, topics.input, [(b"k", encode("InteractionEvent", event("s1", T0, "web", "page_view", [("email", "a@b")])))])
    read_all(topics.bootstrap, topics.transitions, expect=1)
    started = time.time()
    assert w.terminate(timeout=20) == 0, w.output()
    assert time.time() - started < 15
    log = w.output()
    assert "worker stopped" in log, log
    # A second worker in the same group does not re-emit: offsets were committed with the output.
    w2 = worker_factory(topics)
    time.sleep(8)
    w2.terminate()
    assert len(read_all(topics.bootstrap, topics.transitions, idle=2.0, timeout=10)) == 1


def test_cli_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka]\nbrokerz = 'x'\n")
    r = subprocess.run([BIN, "--config", str(bad), "config"], capture_output=True, text=True)
    assert r.returncode != 0 and "brokerz" in r.stderr and "bad.toml" in r.stderr, r.stderr
    r = subprocess.run([BIN, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "run" in r.stdout and "replay" in r.stdout
    model = tmp_path / "m.toml"
    model.write_text("name='m'\nstages=['a']\n[[rules]]\nname='bad'\nevent-types=['x']\nto='zzz'\n")
    r = subprocess.run([BIN, "models", str(model)], capture_output=True, text=True)
    assert r.returncode != 0 and "bad" in r.stderr and "zzz" in r.stderr, r.stderr


@pytest.mark.parametrize("cache", ["0", "1"])
def test_replay_matches_the_worker(bootstrap, worker_factory, tmp_path, cache):
    """The loadgen workload through Kafka gives exactly the transitions `journey replay` computes,
    with every journey in memory (cache 0) or none kept past a commit (1 byte: every journey
    is read back from RocksDB when next needed)."""
    import json
    from conftest import Topics
    topics = Topics(bootstrap)
    topics.create(partitions=1)  # one partition: the worker sees the file's order
    env = topics.env(JOURNEY__TOPICS__INPUT_PARTITIONS="1", JOURNEY__TOPICS__OUTPUT_PARTITIONS="1")
    data = tmp_path / "events.jsonl"
    args = ["--count", "3000", "--customers", "200", "--malformed", "0", "--duplicates", "0.02"]
    subprocess.run([BIN, "produce", "--to-file", str(data), *args], check=True, env=env)
    subprocess.run([BIN, "produce", *args], check=True, env=env)
    oracle = subprocess.run([BIN, "replay", str(data)], check=True, env=env, capture_output=True, text=True).stdout
    row = lambda t, to: (t["customer_key"], t["model"], t["sequence"], to, t["cause"])
    expected = sorted(row(t, t["to"]) for t in map(json.loads, oracle.splitlines()))
    assert len(expected) > 100
    w = worker_factory(topics, JOURNEY__STATE__JOURNEY_CACHE_BYTES=cache,
                       **{k: v for k, v in env.items() if k.startswith("JOURNEY__TOPICS__")})
    msgs = read_all(bootstrap, topics.transitions, expect=len(expected), timeout=120, partitions=1)
    assert w.terminate() == 0, w.output()[-3000:]
    if cache == "1":
        assert "journeys read from the store on first use" in w.output()
    got = sorted(row(t, t["to_stage"]) for t in (decode("StageTransition", m.value()) for m in msgs))
    assert got == expected


def test_transitions_also_routed_per_model_and_per_transition(topics, worker_factory):
    w = worker_factory(topics, JOURNEY__TOPICS__ROUTING='["model", "transition"]')
    events = [(k.encode(), encode("InteractionEvent", e)) for k, e in journey_events()]
    produce(topics.bootstrap, topics.input, events[:2])
    assert len(read_all(topics.bootstrap, topics.transitions, expect=2)) == 2
    produce(topics.bootstrap, topics.input, events[2:])
    assert len(read_all(topics.bootstrap, topics.transitions, expect=5)) == 5
    per_model = read_all(topics.bootstrap, f"{topics.transitions}.funnel5", expect=5)
    assert len(per_model) == 5
    advocacy = read_all(topics.bootstrap, f"{topics.transitions}.funnel5.purchase-to-advocacy", expect=1)
    assert [m.key() for m in advocacy] == [b"customer_id:C-17"]
    first = read_all(topics.bootstrap, f"{topics.transitions}.funnel5.none-to-purchase", expect=1)
    assert [decode("StageTransition", m.value())["customer_key"] for m in first] == ["customer_id:C-17"]
    assert w.terminate() == 0
