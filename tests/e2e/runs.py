"""Helpers of the multi-process tests: the oracle (`journey replay` on the workload the
workers read), the workers' final journeys, and waiting for a group to finish."""
import json
import subprocess
import time

from confluent_kafka import Consumer, TopicPartition

from conftest import BIN


def scaled_env(topics, instances, **extra):
    """Settings of `instances` shares over as many input and output partitions,
    with the test's own internal topics, committing every 50 ms or 200 records."""
    env = {
        "JOURNEY__TOPICS__INPUT_PARTITIONS": str(instances),
        "JOURNEY__TOPICS__OUTPUT_PARTITIONS": str(instances),
        "JOURNEY__PROCESSING__INSTANCES": str(instances),
        "JOURNEY__TOPICS__REPARTITION": f'"rp-{topics.app}"',
        "JOURNEY__TOPICS__IDENTITY_LOG": f'"il-{topics.app}"',
        "JOURNEY__PROCESSING__COMMIT_INTERVAL": '"50ms"',
        "JOURNEY__PROCESSING__COMMIT_MAX_RECORDS": "200",
    }
    env.update(extra)
    return env


def workload(topics, env, tmp_path, count, customers, malformed=0.0):
    """Writes a seeded workload to a file and to the input topic; returns the
    oracle's transitions (JSON lines of `journey replay`) and final journeys.
    Malformed records go to the topic only (the file holds the valid ones)."""
    data = tmp_path / "events.jsonl"
    args = ["--count", str(count), "--customers", str(customers), "--malformed", str(malformed), "--duplicates", "0.02"]
    subprocess.run([BIN, "produce", "--to-file", str(data), *args], check=True, env=topics.env(**env))
    replay = subprocess.run([BIN, "replay", str(data), "--journeys", str(tmp_path / "oracle.jsonl")],
                            check=True, env=topics.env(**env), capture_output=True, text=True).stdout
    subprocess.run([BIN, "produce", *args], check=True, env=topics.env(**env))
    journeys = [json.loads(line) for line in (tmp_path / "oracle.jsonl").read_text().splitlines()]
    return [json.loads(line) for line in replay.splitlines()], journeys


def worker_journeys(topics, env, dirs, tmp_path):
    """The union of the stopped workers' final journeys, sorted by key."""
    got = []
    for i, state in enumerate(dirs):
        out = tmp_path / f"worker-{i}.jsonl"
        subprocess.run([BIN, "inspect", "--journeys", str(out)], check=True, capture_output=True,
                       env=topics.env(JOURNEY__STATE__DIR=f'"{state}"', **env))
        got.extend(json.loads(line) for line in out.read_text().splitlines())
    return sorted(got, key=lambda j: j["key"])


def stable_keys(journeys, transition_keys):
    """Customers whose key never changed: every oracle transition of theirs is
    under their final key."""
    owner = {f'{i["type"]}:{i["value"]}': j["key"] for j in journeys for i in j["identifiers"]}
    return {k for k in transition_keys
            if owner.get(k) == k and not any(owner.get(o) == k and o != k for o in transition_keys)}


def committed_offset(bootstrap, group, topic, partitions=1):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return sum(max(tp.offset, 0) for tp in tps)
    finally:
        c.close()


def wait_caught_up(topics, workers, total, timeout=180, partitions=1):
    """Until the group has committed `total` input records."""
    start = time.time()
    done = 0
    while time.time() - start < timeout:
        done = committed_offset(topics.bootstrap, topics.app, topics.input, partitions)
        if done >= total:
            return
        for w in workers:
            assert w.alive(), w.output()[-3000:]
        time.sleep(0.5)
    tails = "".join(f"\n--- worker {i}, last lines ---\n{w.output()[-3000:]}" for i, w in enumerate(workers))
    raise AssertionError(f"workers did not catch up: committed {done} of {total}{tails}")


def repartition_settled(topics, instances, quiet=8.0, timeout=120):
    """Waits until the journey steps stop committing repartition offsets (forwarding done).

    A forwarded journey still unread when the workers are stopped is not lost
    (a restart reads it) but is missing from the stopped workers' state; with
    a 4 s quiet window a loaded machine stopped them that early once."""
    if instances == 1:
        return
    last, since, start = None, time.time(), time.time()
    while time.time() - start < timeout:
        now = committed_offset(topics.bootstrap, topics.app, f"rp-{topics.app}", 3)
        if now != last:
            last, since = now, time.time()
        elif time.time() - since >= quiet:
            return
        time.sleep(0.5)
    raise AssertionError("repartition topic did not settle")
