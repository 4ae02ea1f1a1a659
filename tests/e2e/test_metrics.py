"""Metrics and health endpoints of a running worker, checked with promtool."""
import re
import socket
import subprocess
import time
import urllib.request

from avro_util import encode, event
from conftest import produce, read_all

T0 = 1_767_225_600_000


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def value(text, name):
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_metrics_pass_promtool_and_counts_reconcile(topics, worker_factory):
    port = free_port()
    w = worker_factory(topics, JOURNEY__HTTP__LISTEN=f'"127.0.0.1:{port}"')
    base = f"http://127.0.0.1:{port}"
    good = [(b"k", encode("InteractionEvent", event(f"m{i}", T0 + i, "web", "page_view", [("anonymous_id", f"a{i % 7}")])))
            for i in range(50)]
    dup = [good[0], good[1]]
    bad = [(b"k", b"junk"), (b"k", b"\x00\x00\x00\x03\xe9\xff")]
    produce(topics.bootstrap, topics.input, good + dup + bad)
    read_all(topics.bootstrap, topics.dead_letters, expect=2)
    deadline = time.time() + 30
    while time.time() < deadline:
        status, text = get(base + "/metrics")
        if value(text, "journey_records_consumed_total") >= 54 and value(text, "journey_commits_total") >= 1:
            break
        time.sleep(0.5)
    assert get(base + "/health/live")[0] == 200
    assert get(base + "/health/ready")[0] == 200
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    consumed = value(text, "journey_records_consumed_total")
    applied = value(text, "journey_events_applied_total")
    dups = value(text, "journey_events_duplicate_total")
    dead = sum(float(v) for v in re.findall(r'^journey_dead_letters_total\{[^}]*\} (\S+)$', text, re.M))
    pending = value(text, "journey_pending_events")
    assert consumed == 54 and dead == 2 and dups == 2, text
    assert consumed == applied + dups + dead + pending
    assert 'journey_transitions_total{cause="touchpoint",from="none",model="funnel5",to="awareness"} 7' in text
    assert value(text, "process_resident_memory_bytes") > 0
    assert w.terminate() == 0


def test_a_real_prometheus_scrapes_the_worker(topics, worker_factory, tmp_path):
    import json
    import urllib.parse
    wport, pport = free_port(), free_port()
    w = worker_factory(topics, JOURNEY__HTTP__LISTEN=f'"127.0.0.1:{wport}"')
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: journey, static_configs: [{{targets: ['127.0.0.1:{wport}']}}]}}]\n")
    log = open(tmp_path / "prometheus.log", "w")
    prom = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{pport}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        def query(q):
            url = f"http://127.0.0.1:{pport}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            try:
                status, body = get(url)
            except urllib.error.URLError:
                return []  # Prometheus not listening yet (slow start on a loaded machine)
            return json.loads(body)["data"]["result"] if status == 200 else []

        deadline = time.time() + 60
        sent = 0
        moving = []
        while time.time() < deadline and not moving:
            batch = [(f"k{i}".encode(), encode("InteractionEvent", event(
                f"p{sent + i}", T0 + sent + i, "web", "page_view", [("anonymous_id", f"x{sent + i}")])))
                for i in range(20)]
            produce(topics.bootstrap, topics.input, batch)
            sent += 20
            time.sleep(1)
            moving = query("rate(journey_transitions_total[10s]) > 0")
        assert moving, "rate(journey_transitions_total[10s]) never became positive"
        assert query('up{job="journey"} == 1')
        for series in ("journey_records_consumed_total", "journey_commit_seconds_bucket", "journey_ready",
                       "journey_transition_latency_seconds_bucket", "journey_customers"):
            assert query(series), f"{series} missing in Prometheus"
        # Consumer lag comes from librdkafka statistics (every 5 s), per partition.
        deadline = time.time() + 20
        while time.time() < deadline and not query("journey_consumer_lag_records"):
            time.sleep(1)
        lag = query("journey_consumer_lag_records")
        assert {r["metric"]["partition"] for r in lag} == {"0", "1", "2"}, lag
    finally:
        prom.terminate()
        try:
            prom.wait(15)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()
        w.terminate()
