"""Fixtures of the end-to-end tests: a real broker on loopback and the real worker binary.

Everything started here is stopped by process id, even when a test fails.
Set JOURNEY_BOOTSTRAP=HOST:PORT to run against another Kafka-protocol broker.
"""
import os
import signal
import subprocess
import tempfile
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CACHE = os.environ.get("JOURNEY_CACHE", os.path.expanduser("~/.cache/journey"))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "target"))
BIN = os.path.join(TARGET, "debug", "journey")
SCHEMAS = os.path.join(ROOT, "schemas")


@pytest.fixture(scope="session")
def bootstrap():
    if os.environ.get("JOURNEY_BOOTSTRAP"):
        yield os.environ["JOURNEY_BOOTSTRAP"]
        return
    state = tempfile.mkdtemp(prefix="journey-broker-")
    out = subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), "start", state],
                         check=True, capture_output=True, text=True)
    try:
        yield out.stdout.strip()
    finally:
        subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), "stop", state], check=False)


class Topics:
    """Random topic names and application id for one test."""

    def __init__(self, bootstrap):
        tag = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.app = f"app-{tag}"
        self.input = f"in-{tag}"
        self.transitions = f"tr-{tag}"
        self.dead_letters = f"dlq-{tag}"
        self.merges = f"mg-{tag}"
        self.links = f"ln-{tag}"
        self.changelog = f"cl-{tag}"
        self.state_dir = os.path.join(tempfile.mkdtemp(prefix="journey-state-"), "state")

    def env(self, **extra):
        env = dict(os.environ)
        env.update({
            "JOURNEY__KAFKA__BROKERS": f'"{self.bootstrap}"',
            "JOURNEY__KAFKA__APPLICATION_ID": f'"{self.app}"',
            "JOURNEY__TOPICS__INPUT": f'"{self.input}"',
            "JOURNEY__TOPICS__TRANSITIONS": f'"{self.transitions}"',
            "JOURNEY__TOPICS__DEAD_LETTERS": f'"{self.dead_letters}"',
            "JOURNEY__TOPICS__MERGES": f'"{self.merges}"',
            "JOURNEY__TOPICS__IDENTITY_LINKS": f'"{self.links}"',
            "JOURNEY__TOPICS__CHANGELOG": f'"{self.changelog}"',
            "JOURNEY__STATE__DIR": f'"{self.state_dir}"',
            "JOURNEY__HTTP__LISTEN": '"127.0.0.1:0"',
            "JOURNEY__ENGINE__OUT_OF_ORDER_MS": "0",
        })
        env.update(extra)
        return env

    def create(self, partitions=3):
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        cfg = {"retention.ms": "604800000"}
        fs = admin.create_topics([NewTopic(t, partitions, 1, config=cfg) for t in
                                  (self.input, self.transitions, self.dead_letters, self.merges, self.links)])
        for f in fs.values():
            f.result()


@pytest.fixture
def topics(bootstrap):
    t = Topics(bootstrap)
    t.create()
    return t


class Worker:
    def __init__(self, topics, log_dir, **env):
        self.log = open(os.path.join(log_dir, f"worker-{uuid.uuid4().hex[:6]}.log"), "w+")
        self.proc = subprocess.Popen([BIN, "run"], env=topics.env(**env), stdout=self.log, stderr=subprocess.STDOUT)

    def alive(self):
        return self.proc.poll() is None

    def terminate(self, timeout=30):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()


@pytest.fixture
def worker_factory(tmp_path):
    started = []

    def start(topics, **env):
        w = Worker(topics, str(tmp_path), **env)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.alive():
            w.proc.kill()
            w.proc.wait()


def produce(bootstrap, topic, records):
    """records: iterable of (key bytes|None, value bytes)."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for k, v in records:
        p.produce(topic, key=k, value=v)
    assert p.flush(30) == 0


def read_all(bootstrap, topic, expect=None, timeout=60, idle=3.0, partitions=3):
    """Reads a topic with read_committed until `expect` records or `idle` seconds without any."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "t-" + uuid.uuid4().hex,
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    start = last = time.time()
    while time.time() - start < timeout:
        for m in c.consume(500, 0.5):
            if m.error():
                continue
            out.append(m)
            last = time.time()
        if expect is not None and len(out) >= expect and time.time() - last > 1.0:
            break
        if expect is None and out and time.time() - last > idle:
            break
    c.close()
    return out
