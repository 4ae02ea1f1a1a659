"""Rebalancing: shares of the work, with their state, move between worker
processes as processes join and leave, while input flows.

One process starts with both shares; a second joins and takes one over (the
first commits and releases it, the second restores it from the changelog);
the first leaves and the second takes its share too. Every handover is
graceful, so the transitions topic holds no aborted record and no transition
twice, and the final journeys equal the oracle's.
"""
import json
import subprocess
import time

from confluent_kafka import Consumer, TopicPartition

from conftest import BIN, Topics
from runs import repartition_settled, scaled_env, stable_keys, wait_caught_up, worker_journeys
from test_crash import ROW, classify

COUNT = 12000


def wait_for(worker, text, times=1, timeout=90):
    deadline = time.time() + timeout
    while worker.output().count(text) < times:
        assert worker.alive(), worker.output()[-3000:]
        assert time.time() < deadline, f"no {text!r} x{times} in:\n" + worker.output()[-3000:]
        time.sleep(0.1)


def wait_committed_on_each(topics, worker, partitions, timeout=90):
    """Until the group has committed input offsets on every partition (every
    share has committed work that a move must carry over)."""
    c = Consumer({"bootstrap.servers": topics.bootstrap, "group.id": topics.app, "enable.auto.commit": False})
    try:
        deadline = time.time() + timeout
        while True:
            tps = c.committed([TopicPartition(topics.input, p) for p in range(partitions)], timeout=10)
            if all(tp.offset > 0 for tp in tps):
                return
            assert worker.alive(), worker.output()[-3000:]
            assert time.time() < deadline, "no commit on every input partition"
            time.sleep(0.2)
    finally:
        c.close()


def test_shares_move_between_processes_with_their_state(bootstrap, worker_factory, tmp_path):
    topics = Topics(bootstrap)
    topics.create(partitions=2)
    # Dynamic membership: a process that stops leaves the group at once
    # (a static member keeps its shares for the session timeout).
    env = scaled_env(topics, 2, JOURNEY__KAFKA__GROUP_INSTANCE_ID='""')
    args = ["--count", str(COUNT), "--customers", "800", "--duplicates", "0.02"]
    data = tmp_path / "events.jsonl"
    subprocess.run([BIN, "produce", "--to-file", str(data), *args], check=True, env=topics.env(**env))
    replay = subprocess.run([BIN, "replay", str(data), "--journeys", str(tmp_path / "oracle.jsonl")],
                            check=True, env=topics.env(**env), capture_output=True, text=True).stdout
    transitions = [json.loads(line) for line in replay.splitlines()]
    oracle = [json.loads(line) for line in (tmp_path / "oracle.jsonl").read_text().splitlines()]
    # The same workload to the topic, slowly, so that shares move mid-stream.
    feeder = subprocess.Popen([BIN, "produce", *args, "--rate", "1500"], env=topics.env(**env),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        a = worker_factory(topics, JOURNEY_INSTANCE_ID="a", JOURNEY__STATE__DIR=f'"{topics.state_dir}-a"', **env)
        wait_for(a, "share started", 2)
        wait_committed_on_each(topics, a, 2)
        b = worker_factory(topics, JOURNEY_INSTANCE_ID="b", JOURNEY__STATE__DIR=f'"{topics.state_dir}-b"', **env)
        wait_for(a, "share released")
        wait_for(b, "share started")
        time.sleep(1)
        assert a.terminate() == 0, a.output()[-3000:]
        wait_for(b, "share started", 2)
        assert feeder.wait(120) == 0
    finally:
        if feeder.poll() is None:
            feeder.kill()
            feeder.wait()
    wait_caught_up(topics, [b], COUNT, timeout=240, partitions=2)
    repartition_settled(topics, 2)
    assert b.terminate() == 0, b.output()[-3000:]
    # Only the second process holds current state: the first one's directory
    # went stale when its last share moved.
    assert worker_journeys(topics, env, [f"{topics.state_dir}-b"], tmp_path) == oracle

    committed, extra = classify(topics, partitions=2)
    assert not extra, extra[:5]
    ids = [r[:3] for r in committed]
    assert len(ids) == len(set(ids)), "a transition committed twice"
    expected = [ROW(t, t["to"]) for t in transitions]
    stable = stable_keys(oracle, {r[0] for r in expected})
    assert len(stable) > 100
    assert sorted(r for r in committed if r[0] in stable) == sorted(r for r in expected if r[0] in stable)
    # Both handovers restored the moved share from the changelog.
    assert b.output().count("state restored from the changelog") >= 2, b.output()[-3000:]
