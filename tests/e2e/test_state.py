"""State survives restarts: from the local RocksDB directory, or rebuilt from the changelog."""
import shutil
import subprocess
import time

from avro_util import decode, encode, event
from conftest import BIN, produce, read_all

T0 = 1_767_225_600_000
HOUR = 3_600_000


def step(topics, worker_factory, eid, t, event_type, expect_total):
    w = worker_factory(topics)
    produce(topics.bootstrap, topics.input,
            [(b"customer_id:C-1", encode("InteractionEvent", event(eid, t, "store", event_type, [("customer_id", "C-1")])))])
    msgs = read_all(topics.bootstrap, topics.transitions, expect=expect_total)
    assert w.terminate() == 0
    rows = sorted((decode("StageTransition", m.value()) for m in msgs), key=lambda t: t["sequence"])
    return [(t["sequence"], t["from_stage"], t["to_stage"]) for t in rows], w.output()


def test_journeys_survive_restarts_and_a_wiped_directory(topics, worker_factory):
    rows, _ = step(topics, worker_factory, "s1", T0, "purchase", 1)
    assert rows == [(1, None, "purchase")]
    # Restart with the directory intact: the second purchase is a repeat purchase.
    rows, log = step(topics, worker_factory, "s2", T0 + HOUR, "purchase", 2)
    assert "local state is current" in log, log
    assert rows[-1] == (2, "purchase", "retention")
    # Wipe the directory: the worker rebuilds it from the changelog topic.
    shutil.rmtree(topics.state_dir)
    rows, log = step(topics, worker_factory, "s3", T0 + 2 * HOUR, "social_share", 3)
    assert "restored from the changelog" in log, log
    assert rows == [(1, None, "purchase"), (2, "purchase", "retention"), (3, "retention", "advocacy")]
    # A duplicate of an event applied before the wipe is still recognised.
    rows, _ = step(topics, worker_factory, "s1", T0, "purchase", 3)
    assert len(rows) == 3
    # The stopped worker's directory can be inspected by any identifier.
    out = subprocess.run([BIN, "inspect", "customer_id:C-1"], env=topics.env(), capture_output=True, text=True, check=True).stdout
    assert "funnel5: advocacy" in out and "touchpoints   3" in out, out
    stats = subprocess.run([BIN, "inspect"], env=topics.env(), capture_output=True, text=True, check=True).stdout
    assert "journeys          1" in stats, stats


def test_at_least_once_mode_emits_and_resumes(topics, worker_factory):
    env = {"JOURNEY__PROCESSING__MODE": '"at-least-once"'}
    w = worker_factory(topics, **env)
    produce(topics.bootstrap, topics.input,
            [(b"customer_id:C-2", encode("InteractionEvent", event("a1", T0, "store", "purchase", [("customer_id", "C-2")])))])
    assert len(read_all(topics.bootstrap, topics.transitions, expect=1)) == 1
    assert w.terminate() == 0
    w = worker_factory(topics, **env)
    produce(topics.bootstrap, topics.input,
            [(b"customer_id:C-2", encode("InteractionEvent", event("a2", T0 + HOUR, "store", "purchase", [("customer_id", "C-2")])))])
    msgs = read_all(topics.bootstrap, topics.transitions, expect=2)
    assert w.terminate() == 0
    rows = sorted((decode("StageTransition", m.value()) for m in msgs), key=lambda t: t["sequence"])
    assert [(t["sequence"], t["to_stage"]) for t in rows] == [(1, "purchase"), (2, "retention")]


def test_a_directory_behind_the_committed_state_catches_up_from_the_changelog_tail(topics, worker_factory, tmp_path):
    """A state directory put back from an older copy (or left behind by a crash
    between the Kafka commit and the local write) reads only the changelog after
    the position it stored, applying the commits it missed."""
    rows, _ = step(topics, worker_factory, "t1", T0, "purchase", 1)
    backup = tmp_path / "backup"
    shutil.copytree(topics.state_dir, backup)
    step(topics, worker_factory, "t2", T0 + HOUR, "purchase", 2)
    rows, _ = step(topics, worker_factory, "t3", T0 + 2 * HOUR, "social_share", 3)
    assert rows == [(1, None, "purchase"), (2, "purchase", "retention"), (3, "retention", "advocacy")]
    shutil.rmtree(topics.state_dir)
    shutil.copytree(backup, topics.state_dir)
    w = worker_factory(topics)
    deadline = time.time() + 60
    while "ready" not in w.output() and time.time() < deadline:
        assert w.alive(), w.output()[-3000:]
        time.sleep(0.1)
    log = w.output()
    assert "caught up from the changelog tail" in log, log[-3000:]
    assert "restored from the changelog" not in log
    # A repeat of t2 is recognised (the tail brought it back); nothing new is emitted.
    produce(topics.bootstrap, topics.input,
            [(b"customer_id:C-1", encode("InteractionEvent", event("t2", T0 + HOUR, "store", "purchase", [("customer_id", "C-1")])))])
    time.sleep(3)
    assert w.terminate() == 0
    assert len(read_all(topics.bootstrap, topics.transitions, idle=2.0, timeout=10)) == 3
    out = subprocess.run([BIN, "inspect", "customer_id:C-1"], env=topics.env(), capture_output=True, text=True, check=True).stdout
    assert "funnel5: advocacy" in out and "touchpoints   3" in out, out
