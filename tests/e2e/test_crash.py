"""Crashes: a worker killed with SIGKILL at random points, restarted, loses and repeats nothing.

The oracle is `journey replay` over the same workload. The local broker leaks
records of aborted transactions to read_committed consumers (DESIGN.md §6), so
the transitions topic is classified with the partition's own COMMIT/ABORT
markers (kafka_raw), as a read_committed consumer on Apache Kafka would: the
committed records must be exactly the oracle's, and every other record must
belong to an aborted transaction.
"""
import random
import shutil
import signal
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

import kafka_raw
from avro_util import decode
from conftest import Topics
from runs import repartition_settled, scaled_env, stable_keys, wait_caught_up, worker_journeys, workload

COUNT = 12000
ROW = lambda t, to: (t["customer_key"], t["model"], t["sequence"], t["from_stage"] if "from_stage" in t else t["from"], to, t["cause"])


def read_uncommitted(bootstrap, topic, partitions=1):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "raw-" + uuid.uuid4().hex,
                  "isolation.level": "read_uncommitted", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, last = [], time.time()
    while time.time() - last < 3:
        for m in c.consume(1000, 0.5):
            if not m.error():
                out.append(m)
                last = time.time()
    c.close()
    return out


def run_with_kills(bootstrap, worker_factory, tmp_path, mode):
    topics = Topics(bootstrap)
    topics.create(partitions=1)  # one partition: the worker sees the file's order
    env = {
        "JOURNEY__TOPICS__INPUT_PARTITIONS": "1",
        "JOURNEY__TOPICS__OUTPUT_PARTITIONS": "1",
        "JOURNEY__PROCESSING__MODE": f'"{mode}"',
        "JOURNEY__PROCESSING__COMMIT_INTERVAL": '"50ms"',
        "JOURNEY__PROCESSING__COMMIT_MAX_RECORDS": "200",
        "JOURNEY__PROCESSING__IDLE_ADVANCE_AFTER": '"0s"',
    }
    transitions, oracle = workload(topics, env, tmp_path, COUNT, 800)
    expected = sorted(ROW(t, t["to"]) for t in transitions)
    assert len(expected) > 500

    rng = random.Random(7)
    kills = 0
    for round_ in range(6):
        if round_ == 3:
            # Mid-restore: wipe the directory, then kill during the rebuild.
            shutil.rmtree(topics.state_dir, ignore_errors=True)
            w = worker_factory(topics, **env)
            time.sleep(rng.uniform(0.2, 0.8))
        else:
            w = worker_factory(topics, **env)
            time.sleep(rng.uniform(1.5, 5.0))
        if w.alive():
            w.proc.send_signal(signal.SIGKILL)
            w.proc.wait()
            kills += 1
    assert kills >= 5
    w = worker_factory(topics, **env)
    wait_caught_up(topics, [w], COUNT)
    time.sleep(1)
    assert w.terminate() == 0, w.output()[-3000:]
    # The final journeys (identifiers, stages, touchpoints) equal the oracle's.
    assert worker_journeys(topics, env, [topics.state_dir], tmp_path) == oracle
    return topics, expected


def classify(topics, partitions=1):
    verdicts = {p: kafka_raw.outcomes(topics.bootstrap, topics.transitions, p) for p in range(partitions)}
    kept, extra = [], []
    for m in read_uncommitted(topics.bootstrap, topics.transitions, partitions):
        t = decode("StageTransition", m.value())
        row = ROW(t, t["to_stage"])
        verdict = verdicts[m.partition()].get(m.offset())
        (kept if verdict in (kafka_raw.COMMITTED, kafka_raw.PLAIN) else extra).append((row, verdict))
    return [r for r, _ in kept], extra


def test_sigkill_exactly_once(bootstrap, worker_factory, tmp_path):
    topics, expected = run_with_kills(bootstrap, worker_factory, tmp_path, "exactly-once")
    committed, extra = classify(topics)
    assert sorted(committed) == expected, (len(committed), len(expected))
    assert all(v == kafka_raw.ABORTED for _, v in extra), [e for e in extra if e[1] != kafka_raw.ABORTED][:5]


def test_sigkill_at_least_once(bootstrap, worker_factory, tmp_path):
    topics, expected = run_with_kills(bootstrap, worker_factory, tmp_path, "at-least-once")
    committed, extra = classify(topics)
    assert not extra
    # Nothing missing; repeats are whole transitions, recognisable by their id.
    assert set(committed) == set(expected)
    by_id = {}
    for r in committed:
        by_id.setdefault(r[:3], set()).add(r)
    assert all(len(v) == 1 for v in by_id.values())


def test_sigkill_two_instances(bootstrap, worker_factory, tmp_path):
    """Two instances stitching across partitions; one or the other killed at random points."""
    topics = Topics(bootstrap)
    topics.create(partitions=2)
    # A small journey cache: most journeys are read back from RocksDB.
    env = scaled_env(topics, 2, JOURNEY__STATE__JOURNEY_CACHE_BYTES="50000")
    transitions, oracle = workload(topics, env, tmp_path, COUNT, 800)
    dirs = [f"{topics.state_dir}-{i}" for i in range(2)]

    def start(i):
        return worker_factory(topics, JOURNEY_INSTANCE_ID=str(i), JOURNEY__STATE__DIR=f'"{dirs[i]}"', **env)

    workers = [start(0), start(1)]
    rng = random.Random(11)
    kills = 0
    for round_ in range(6):
        i = round_ % 2
        time.sleep(rng.uniform(1.0, 4.0))
        if workers[i].alive():
            workers[i].proc.send_signal(signal.SIGKILL)
            workers[i].proc.wait()
            kills += 1
        if round_ == 3:
            shutil.rmtree(dirs[i], ignore_errors=True)
        workers[i] = start(i)
    assert kills >= 5, [w.output()[-2000:] for w in workers]
    wait_caught_up(topics, workers, COUNT, timeout=300, partitions=2)
    repartition_settled(topics, 2)
    for w in workers:
        assert w.terminate() == 0, w.output()[-3000:]

    assert worker_journeys(topics, env, dirs, tmp_path) == oracle

    committed, extra = classify(topics, partitions=2)
    assert all(v == kafka_raw.ABORTED for _, v in extra), [e for e in extra if e[1] != kafka_raw.ABORTED][:5]
    ids = [r[:3] for r in committed]
    assert len(ids) == len(set(ids)), "a transition id committed twice"
    # Customers whose key never changed: exactly the oracle's transitions.
    expected = [ROW(t, t["to"]) for t in transitions]
    stable = stable_keys(oracle, {r[0] for r in expected})
    assert len(stable) > 100
    assert sorted(r for r in committed if r[0] in stable) == sorted(r for r in expected if r[0] in stable)


@pytest.mark.parametrize("instances", [1, 2])
def test_graceful_restarts_leave_no_extras(bootstrap, worker_factory, tmp_path, instances):
    """Workers stopped with SIGTERM at random points and restarted (a rolling
    restart): every transaction is committed, so the topic holds no aborted
    record at all, and no transition twice."""
    topics = Topics(bootstrap)
    topics.create(partitions=instances)
    env = scaled_env(topics, instances)
    if instances == 1:
        env["JOURNEY__PROCESSING__IDLE_ADVANCE_AFTER"] = '"0s"'
    transitions, oracle = workload(topics, env, tmp_path, COUNT, 800)
    dirs = [f"{topics.state_dir}-{i}" for i in range(instances)]

    def start(i):
        w = worker_factory(topics, JOURNEY_INSTANCE_ID=str(i), JOURNEY__STATE__DIR=f'"{dirs[i]}"', **env)
        deadline = time.time() + 60
        while "ready" not in w.output() and time.time() < deadline:
            assert w.alive(), w.output()[-3000:]
            time.sleep(0.1)
        return w

    workers = [start(i) for i in range(instances)]
    rng = random.Random(5)
    for round_ in range(4):
        i = round_ % instances
        time.sleep(rng.uniform(1.0, 3.0))
        assert workers[i].terminate() == 0, workers[i].output()[-3000:]
        workers[i] = start(i)
    wait_caught_up(topics, workers, COUNT, timeout=300, partitions=instances)
    repartition_settled(topics, instances)
    for w in workers:
        assert w.terminate() == 0, w.output()[-3000:]
    assert worker_journeys(topics, env, dirs, tmp_path) == oracle

    committed, extra = classify(topics, partitions=instances)
    assert not extra, extra[:5]
    ids = [r[:3] for r in committed]
    assert len(ids) == len(set(ids)), "a transition committed twice"
    expected = [ROW(t, t["to"]) for t in transitions]
    if instances == 1:
        assert sorted(committed) == sorted(expected)
    else:
        stable = stable_keys(oracle, {r[0] for r in expected})
        assert sorted(r for r in committed if r[0] in stable) == sorted(r for r in expected if r[0] in stable)
