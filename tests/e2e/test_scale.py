"""Scale-out: 1, 2 and 3 worker processes compute the journeys one process computes.

The input has three partitions and the load generator keys events by their
first identifier, so one person's events arrive on several partitions under
different identifiers. The oracle is `journey replay --journeys` on the same
workload; the union of the workers' final journeys must equal it.
"""
import pytest

from avro_util import decode
from conftest import Topics, read_all
from runs import repartition_settled, stable_keys, wait_caught_up, worker_journeys, workload

COUNT = 6000


@pytest.mark.parametrize("instances", [1, 2, 3])
def test_workers_compute_the_oracles_journeys(bootstrap, worker_factory, tmp_path, instances):
    topics = Topics(bootstrap)
    topics.create(partitions=3)
    env = {
        "JOURNEY__PROCESSING__INSTANCES": str(instances),
        "JOURNEY__TOPICS__REPARTITION": f'"rp-{topics.app}"',
        "JOURNEY__TOPICS__IDENTITY_LOG": f'"il-{topics.app}"',
    }
    expected, oracle = workload(topics, env, tmp_path, COUNT, 400)

    workers, dirs = [], []
    for i in range(instances):
        state = f"{topics.state_dir}-{i}"
        dirs.append(state)
        workers.append(worker_factory(topics, JOURNEY_INSTANCE_ID=f"journey-{i}",
                                      JOURNEY__STATE__DIR=f'"{state}"', **env))
    wait_caught_up(topics, workers, COUNT, timeout=240, partitions=3)
    repartition_settled(topics, instances)
    for w in workers:
        assert w.terminate() == 0, w.output()[-3000:]

    got = worker_journeys(topics, env, dirs, tmp_path)
    assert [j["key"] for j in got] == [j["key"] for j in oracle]
    assert got == oracle

    committed = [decode("StageTransition", m.value()) for m in read_all(bootstrap, topics.transitions, timeout=120)]
    row = lambda t, f, to: (t["customer_key"], t["model"], t["sequence"], t[f], t[to], t["cause"])
    by_key = lambda rows: {k: sorted(r for r in rows if r[0] == k) for k in {r[0] for r in rows}}
    exp = by_key([row(t, "from", "to") for t in expected])
    got_t = by_key([row(t, "from_stage", "to_stage") for t in committed])
    # Customers whose key never changed get exactly the oracle's transitions.
    stable = stable_keys(oracle, set(exp))
    assert len(stable) > 100
    differ = [k for k in stable if exp[k] != got_t.get(k)]
    assert not differ, [(exp[k], got_t.get(k)) for k in differ[:3]]

    # The others: the last transition under the final key is the final stage;
    # a journey that only moved to a new key (a merge that changed no stage)
    # has its stage from a transition under one of its other identifiers.
    latest, seen = {}, set()
    for t in committed:
        k = (t["customer_key"], t["model"])
        seen.add((t["customer_key"], t["model"], t["to_stage"]))
        if k not in latest or t["sequence"] > latest[k]["sequence"]:
            latest[k] = t
    for j in oracle:
        keys = {f'{i["type"]}:{i["value"]}' for i in j["identifiers"]}
        for model, stage in j["stages"]:
            if stage is None:
                continue
            if (j["key"], model) in latest:
                assert latest[(j["key"], model)]["to_stage"] == stage, (j["key"], model)
            else:
                assert any((k, model, stage) in seen for k in keys), (j["key"], model)


def test_two_instances_dead_letter_garbage_and_counts_reconcile(bootstrap, worker_factory, tmp_path):
    """Malformed records among the input of two instances: every one reaches the
    dead-letter topic once, with its source coordinates; the valid ones give the
    oracle's journeys; input = valid records (in the oracle's file) + dead letters."""
    topics = Topics(bootstrap)
    topics.create(partitions=3)
    env = {
        "JOURNEY__PROCESSING__INSTANCES": "2",
        "JOURNEY__TOPICS__REPARTITION": f'"rp-{topics.app}"',
        "JOURNEY__TOPICS__IDENTITY_LOG": f'"il-{topics.app}"',
    }
    _, oracle = workload(topics, env, tmp_path, COUNT, 400, malformed=0.03)
    valid = len((tmp_path / "events.jsonl").read_text().splitlines())
    garbage = COUNT - valid
    assert garbage > 50
    dirs = [f"{topics.state_dir}-{i}" for i in range(2)]
    workers = [worker_factory(topics, JOURNEY_INSTANCE_ID=f"journey-{i}", JOURNEY__STATE__DIR=f'"{d}"', **env)
               for i, d in enumerate(dirs)]
    wait_caught_up(topics, workers, COUNT, timeout=240, partitions=3)
    repartition_settled(topics, 2)
    for w in workers:
        assert w.terminate() == 0, w.output()[-3000:]
    assert worker_journeys(topics, env, dirs, tmp_path) == oracle

    dead = [decode("DeadLetter", m.value()) for m in read_all(bootstrap, topics.dead_letters, expect=garbage, timeout=60)]
    sources = [(d["source_topic"], d["source_partition"], d["source_offset"]) for d in dead]
    assert len(sources) == len(set(sources)) == garbage, (len(sources), len(set(sources)), garbage)
    assert all(t == topics.input for t, _, _ in sources)
    reasons = {d["reason"] for d in dead}
    assert reasons <= {"not_confluent_framed", "unknown_schema_id", "invalid_avro", "no_identifier",
                       "all_identifiers_blocked", "trailing_bytes"}, reasons
