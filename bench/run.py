#!/usr/bin/env python3
"""Benchmark harness: the pipeline against a raw Kafka baseline, on one broker, in one run.

    bench/run.sh [--short | --full] [--repeat N]

Each repetition, on fresh topics holding the same seeded workload:
  1. baseline  `journey pipe`: transactional consume -> produce of the input
               to one output topic, same clients, batch and commit settings,
               no decoding or state (the pipeline's hop: input -> outputs);
  2. pipeline  `journey run`, exactly-once, one worker, over the same input;
  3. restart   the stopped worker restarted with its directory intact, then
               with the directory wiped (time to "ready" from the process start);
  4. latency   a fresh pipeline, and a fresh baseline, fed at a quarter and at
               half of the measured pipeline rate: event produced -> its
               transition (copy) visible to a read_committed consumer, after a
               2 s warm-up; "drift" compares the last fifth of the run with the
               first (about 1: the pipeline kept up).
Then the engine + store benchmark (no broker) with raw RocksDB puts of the same
writes, with every journey in memory and with a 32 MiB journey cache (peak RSS
of each). Throughput is measured from outside, the same way for both: records
committed by the group per second between its first and its last commit.
Prints a table of medians and ratios. Timings are never asserted.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from avro_util import decode, encode  # noqa: E402
from runs import committed_offset  # noqa: E402

CACHE = os.environ.get("JOURNEY_CACHE", os.path.expanduser("~/.cache/journey"))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "target"))
BIN = os.path.join(TARGET, "release", "journey")
QUIX_PY = os.path.join(CACHE, "venv-quix", "bin", "python")
PARTITIONS = 3


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class Run:
    """Topic names, environment and processes of one repetition; everything stopped by PID."""

    def __init__(self, bootstrap, work):
        tag = uuid.uuid4().hex[:8]
        self.bootstrap, self.work, self.tag = bootstrap, work, tag
        self.app = f"bench-{tag}"
        self.input = f"bench-in-{tag}"
        self.copy = f"bench-copy-{tag}"
        self.state = os.path.join(work, f"state-{tag}")
        self.procs = []

    def env(self, **extra):
        e = dict(os.environ)
        e.update({
            "JOURNEY__KAFKA__BROKERS": f'"{self.bootstrap}"',
            "JOURNEY__KAFKA__APPLICATION_ID": f'"{self.app}"',
            "JOURNEY__TOPICS__INPUT": f'"{self.input}"',
            "JOURNEY__TOPICS__TRANSITIONS": f'"tr-{self.tag}"',
            "JOURNEY__TOPICS__DEAD_LETTERS": f'"dlq-{self.tag}"',
            "JOURNEY__TOPICS__MERGES": f'"mg-{self.tag}"',
            "JOURNEY__TOPICS__IDENTITY_LINKS": f'"ln-{self.tag}"',
            "JOURNEY__TOPICS__CHANGELOG": f'"cl-{self.tag}"',
            "JOURNEY__STATE__DIR": f'"{self.state}"',
            "JOURNEY__HTTP__LISTEN": '"127.0.0.1:0"',
            "JOURNEY__LOG__LEVEL": '"warn,journey=info"',
        })
        e.update(extra)
        return e

    def create_topics(self):
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        cfg = {"retention.ms": "604800000"}
        fs = admin.create_topics([NewTopic(t, PARTITIONS, 1, config=cfg)
                                  for t in (self.input, self.copy, f"quix-out-{self.tag}")])
        for f in fs.values():
            f.result()
        subprocess.run([BIN, "topics"], env=self.env(), check=True, capture_output=True)

    def start(self, args, logname, **env):
        out = open(os.path.join(self.work, f"{logname}-{self.tag}.log"), "w+")
        p = subprocess.Popen([BIN, *args], env=self.env(**env), stdout=out, stderr=subprocess.STDOUT)
        p.started, p.logfile = time.time(), out
        self.procs.append(p)
        return p

    def start_quix(self):
        """The Quix Streams peer (bench/quix_peer.py) over the same input."""
        out = open(os.path.join(self.work, f"quix-{self.tag}.log"), "w+")
        p = subprocess.Popen([QUIX_PY, os.path.join(ROOT, "bench", "quix_peer.py"), self.bootstrap, self.input,
                              f"quix-out-{self.tag}", f"{self.app}-quix", os.path.join(self.work, f"quix-{self.tag}"),
                              os.path.join(ROOT, "schemas", "InteractionEvent.avsc")],
                             cwd=self.work, stdout=out, stderr=subprocess.STDOUT)
        p.started, p.logfile = time.time(), out
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def committed_total(bootstrap, group, topic):
    return committed_offset(bootstrap, group, topic, PARTITIONS)


def throughput(run, group, total, proc, timeout, then=None):
    """Records/s committed by `group`, between its first commit and the one that reaches `total`
    (and, with `then`, until the group's offsets on that internal topic stop moving)."""
    first = None
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = committed_total(run.bootstrap, group, run.input)
        now = time.time()
        if done > 0 and first is None:
            first = (now, done)
        if done >= total:
            if first[1] >= total or now <= first[0]:
                return float("nan")
            end, last = now, None
            while then:
                moved = committed_total(run.bootstrap, group, then)
                if moved == last and time.time() - end > 1.0:
                    break
                if moved != last:
                    last, end = moved, time.time()
                time.sleep(0.1)
            return (total - first[1]) / (end - first[0])
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}; see {proc.logfile.name}")
        time.sleep(0.1)
    raise RuntimeError(f"group {group} did not finish within {timeout}s")


def time_to_ready(run, proc, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        proc.logfile.flush()
        with open(proc.logfile.name) as f:
            if "partitions assigned: ready" in f.read():
                return time.time() - proc.started
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}; see {proc.logfile.name}")
        time.sleep(0.05)
    raise RuntimeError("worker not ready in time")


WARMUP = 2.0


def latency(bootstrap, work, events, rate, seconds, pipe=False, **env):
    """Feeds `events` at `rate`/s to a fresh pipeline (or, with `pipe`, to the raw
    consume -> produce baseline); returns the latencies in ms of the transitions
    (copies) of events sent after a warm-up (2 s, or a fifth of a short run), in
    send order."""
    run = Run(bootstrap, work)
    run.create_topics()
    if pipe:
        w = run.start(["pipe", "--to", run.copy, "--count", "0"], "latency-pipe", **env)
        out, schema, field = run.copy, "InteractionEvent", "event_id"
    else:
        w = run.start(["run"], "latency-worker", **env)
        out, schema, field = f"tr-{run.tag}", "StageTransition", "trigger_event_id"
    try:
        if pipe:
            time.sleep(3)
        else:
            time_to_ready(run, w)
        sent = {}
        got = []
        stop = threading.Event()

        def read():
            c = Consumer({"bootstrap.servers": bootstrap, "group.id": "lat-" + run.tag,
                          "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                          "enable.auto.commit": False, "fetch.wait.max.ms": 10})
            c.assign([TopicPartition(out, p, 0) for p in range(PARTITIONS)])
            while not stop.is_set():
                for m in c.consume(500, 0.1):
                    if not m.error():
                        got.append((time.time(), m.value()))  # decoded after the run
            c.close()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        # Not idempotent: at ~16k records/s the local broker has answered an
        # idempotent produce with a fatal "out of order sequence number",
        # which ended the phase. A retried record arrives twice at worst, and
        # the engine counts the copy as a duplicate.
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "acks": "all",
                      "enable.idempotence": False})
        n = min(len(events), int(rate * seconds))
        start = time.time()
        for i, (key, value, eid) in enumerate(events[:n]):
            due = start + i / rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            sent[eid] = time.time()
            p.produce(run.input, key=key, value=value)
            p.poll(0)
        p.flush(30)
        time.sleep(3)
        stop.set()
        reader.join()
        if w.poll() is not None:
            raise RuntimeError(f"{w.args} exited with {w.returncode}; see {w.logfile.name}")
        lat = []
        warmup = min(WARMUP, n / rate / 5)
        for t, v in got:
            s = sent.get(decode(schema, v)[field])
            if s is not None and s - start >= warmup:
                lat.append((s, (t - s) * 1000))
        return [ms for _, ms in sorted(lat)]
    finally:
        run.stop_all()


def drift(lat):
    """Median latency of the last fifth of the run over the first fifth: about 1
    when the pipeline keeps up, growing when it falls behind."""
    k = len(lat) // 5
    if k == 0:
        return float("nan")
    return statistics.median(lat[-k:]) / max(statistics.median(lat[:k]), 1e-9)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true", help="small workload, one repetition (a few minutes)")
    ap.add_argument("--full", action="store_true", help="1M customers, 3 repetitions")
    ap.add_argument("--repeat", type=int, help="repetitions (default: 1 short, 3 full)")
    ap.add_argument("--bootstrap", default=os.environ.get("JOURNEY_BOOTSTRAP"), help="an existing broker")
    a = ap.parse_args()
    if a.full:
        events, customers, repeat, store_args = 2_000_000, 1_000_000, 3, ["1000000", "100000"]
    elif a.short:
        events, customers, repeat, store_args = 20_000, 5_000, 1, ["20000", "5000"]
    else:
        events, customers, repeat, store_args = 200_000, 50_000, 3, ["200000", "50000"]
    repeat = a.repeat or repeat
    work = tempfile.mkdtemp(prefix="journey-bench-")
    broker_dir = None
    bootstrap = a.bootstrap
    if not bootstrap:
        broker_dir = os.path.join(work, "broker")
        bootstrap = subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), "start", broker_dir],
                                   check=True, capture_output=True, text=True).stdout.strip()
    rows = {k: [] for k in ("baseline", "pipeline", "pipeline2", "quix", "ready_intact", "ready_wiped")}
    try:
        workload = os.path.join(work, "events.jsonl")
        gen = ["--count", str(events), "--customers", str(customers), "--malformed", "0"]
        subprocess.run([BIN, "produce", "--to-file", workload, *gen], check=True, capture_output=True)
        for r in range(repeat):
            run = Run(bootstrap, work)
            run.create_topics()
            log(f"repetition {r + 1}/{repeat}: producing {events} events")
            subprocess.run([BIN, "produce", *gen], env=run.env(), check=True, capture_output=True)
            try:
                pipe = run.start(["pipe", "--to", run.copy, "--count", str(events)], "pipe")
                rows["baseline"].append(throughput(run, f"{run.app}-pipe", events, pipe, 1800))
                pipe.wait(60)
                worker = run.start(["run"], "worker")
                rows["pipeline"].append(throughput(run, run.app, events, worker, 3600))
                worker.send_signal(signal.SIGTERM)
                worker.wait(60)
                # Two instances (processing.instances = 2) over the same input,
                # under another application id, so with their own internal topics.
                app2 = f"{run.app}-x2"
                two = [run.start(["run"], f"worker2-{i}", JOURNEY__KAFKA__APPLICATION_ID=f'"{app2}"',
                                 JOURNEY__PROCESSING__INSTANCES="2", JOURNEY_INSTANCE_ID=str(i),
                                 JOURNEY__STATE__DIR=f'"{run.state}-x2-{i}"',
                                 JOURNEY__TOPICS__TRANSITIONS=f'"tr2-{run.tag}"',
                                 JOURNEY__TOPICS__MERGES=f'"mg2-{run.tag}"',
                                 JOURNEY__TOPICS__IDENTITY_LINKS=f'"ln2-{run.tag}"',
                                 JOURNEY__TOPICS__DEAD_LETTERS=f'"dlq2-{run.tag}"',
                                 JOURNEY__TOPICS__CHANGELOG='""') for i in range(2)]
                rows["pipeline2"].append(throughput(run, app2, events, two[0], 3600, then=f"{app2}-repartition"))
                for w in two:
                    w.send_signal(signal.SIGTERM)
                    w.wait(60)
                quix = run.start_quix()
                rows["quix"].append(throughput(run, f"{run.app}-quix", events, quix, 3600))
                quix.send_signal(signal.SIGTERM)
                quix.wait(60)
                worker = run.start(["run"], "worker-restart")
                rows["ready_intact"].append(time_to_ready(run, worker))
                worker.send_signal(signal.SIGTERM)
                worker.wait(60)
                shutil.rmtree(run.state)
                worker = run.start(["run"], "worker-wiped")
                rows["ready_wiped"].append(time_to_ready(run, worker))
            finally:
                run.stop_all()
            log(f"  baseline {rows['baseline'][-1]:.0f}/s, pipeline {rows['pipeline'][-1]:.0f}/s, "
                f"2 instances {rows['pipeline2'][-1]:.0f}/s, "
                f"quix {rows['quix'][-1]:.0f}/s, "
                f"ready {rows['ready_intact'][-1]:.2f}s intact, {rows['ready_wiped'][-1]:.2f}s wiped")
        peak = statistics.median(rows["pipeline"])
        log("latency at a quarter and at half of the pipeline's peak, baseline and pipeline")
        feed = []
        with open(workload) as f:
            for line in f:
                e = json.loads(line)
                feed.append((e["identifiers"][0]["value"].encode(), encode("InteractionEvent", to_avro(e)), e["event_id"]))
        secs = 20 if a.short else 60
        lat = {}
        for share in (4, 2):
            for pipe in (True, False):
                log(f"  {'baseline' if pipe else 'pipeline'} at 1/{share} of peak ({peak / share:.0f} events/s)")
                lat[share, pipe] = latency(bootstrap, work, feed, peak / share, secs, pipe=pipe)
        log("engine + store alone (no broker), with raw RocksDB puts of the same writes,"
            " every journey in memory, then at most 32 MiB of them")
        store = "".join(
            # --workspace, not -p journey-store: the same features as the test build,
            # so it reuses that build of RocksDB instead of compiling another.
            subprocess.run(["cargo", "bench", "-q", "--profile", "dev", "--workspace", "--bench", "apply", "--",
                            *store_args, cache], cwd=ROOT, check=True, capture_output=True, text=True).stdout + "\n"
            for cache in ("0", str(32 << 20)))
    finally:
        if broker_dir:
            subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), "stop", broker_dir], check=False)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\nworkload: {events} events, {customers} customers, {PARTITIONS} input partitions, "
          f"{repeat} repetition(s), medians\n")
    print("| measurement | median | ratio |")
    print("|---|---|---|")
    print(f"| baseline: raw transactional consume→produce | {med['baseline']:,.0f} records/s | 1.00 |")
    print(f"| pipeline, exactly-once, 1 worker | {med['pipeline']:,.0f} events/s | "
          f"{med['pipeline'] / med['baseline']:.2f} × baseline |")
    print(f"| pipeline, exactly-once, 2 instances | {med['pipeline2']:,.0f} events/s | "
          f"{med['pipeline2'] / med['baseline']:.2f} × baseline, {med['pipeline2'] / med['pipeline']:.2f} × 1 worker |")
    print(f"| peer: Quix Streams 3.28, exactly-once (bench/quix_peer.py) | {med['quix']:,.0f} events/s | "
          f"pipeline = {med['pipeline'] / med['quix']:.1f} × peer |")
    for (share, pipe), ms in sorted(lat.items(), key=lambda kv: (-kv[0][0], not kv[0][1])):
        what = "baseline: event → its copy" if pipe else "pipeline: event → transition"
        base = lat[share, True]
        ratio = "" if pipe else f"p50 {pct(ms, 0.5) / max(pct(base, 0.5), 1e-9):.2f} × baseline"
        print(f"| {what}, read_committed, at {peak / share:,.0f} events/s | p50 {pct(ms, 0.5):.0f} ms, "
              f"p99 {pct(ms, 0.99):.0f} ms, max {pct(ms, 1.0):.0f} ms ({len(ms)} records, "
              f"drift {drift(ms):.2f}) | {ratio} |")
    print(f"| time to ready, directory intact | {med['ready_intact']:.2f} s | |")
    print(f"| time to ready, directory wiped (changelog restore) | {med['ready_wiped']:.2f} s | |")
    print("\nengine + store alone:\n" + store.strip())
    shutil.rmtree(work, ignore_errors=True)


def to_avro(e):
    """The loadgen's JSON event in the shape of the InteractionEvent schema."""
    return {
        "event_id": e["event_id"], "event_time": e["time"], "channel": e["channel"], "channel_other": None,
        "event_type": e["event_type"], "mode": "offline" if e.get("offline") else "online",
        "touchpoint": "direct" if e.get("direct", True) else "indirect",
        "identifiers": [{"type": i["type"], "value": i["value"]} for i in e["identifiers"]],
        "value": e.get("value"), "currency": e.get("currency"), "campaign": e.get("campaign"),
        "properties": e.get("properties") or {},
    }


if __name__ == "__main__":
    main()
