#!/usr/bin/env python3
"""The peer: the journey job written with Quix Streams (RocksDB state, exactly-once).

    quix_peer.py BOOTSTRAP INPUT_TOPIC OUTPUT_TOPIC GROUP STATE_DIR

Reads the same Confluent-framed Avro InteractionEvents as `journey run`,
re-keys each event by its best identifier (customer_id > email > phone >
loyalty_id > device_id > anonymous_id; Quix repartitions through its own
topic, the same hop our worker makes), keeps per-customer state in RocksDB and
applies the default `funnel5` model's touchpoint rules (1-5 of the engine
issue), producing one JSON record per stage transition, exactly once.

It does less than `journey run`, in the peer's favour: no identity stitching
across events (a customer is one identifier), no lapse timer, no
out-of-orderness buffer, no late-event replay, no dead letters.
"""
import io
import json
import sys

import fastavro
from quixstreams import Application
from quixstreams.models.serializers import Deserializer

SCHEMA = fastavro.parse_schema(json.load(open(sys.argv[6] if len(sys.argv) > 6 else "schemas/InteractionEvent.avsc")))
PRIORITY = ["customer_id", "email", "phone", "loyalty_id", "device_id", "anonymous_id"]
AWARENESS = {"ad_impression", "ad_click", "social_mention", "search_visit", "referral_visit", "page_view",
             "email_open", "content_view"}
CONSIDERATION = {"product_view", "pricing_view", "comparison", "review_read", "demo_request", "add_to_cart",
                 "wishlist_add", "newsletter_signup", "chat_inquiry", "store_visit", "quote_request"}
RETENTION = {"subscription_renewal", "loyalty_join"}
ADVOCACY = {"referral_sent", "social_share", "testimonial"}


class ConfluentAvro(Deserializer):
    def __call__(self, value, ctx):
        event = fastavro.schemaless_reader(io.BytesIO(value[5:]), SCHEMA, None)
        event["event_time"] = int(event["event_time"].timestamp() * 1000)
        return event


def customer(event):
    ids = sorted(event["identifiers"], key=lambda i: (PRIORITY.index(i["type"]) if i["type"] in PRIORITY else 99,
                                                      i["value"]))
    return f'{ids[0]["type"]}:{ids[0]["value"].strip().lower()}'


def step(stage, purchased, event):
    t = event["event_type"]
    if t in AWARENESS and stage is None:
        return "awareness"
    if t in CONSIDERATION and stage in (None, "awareness"):
        return "consideration"
    if t == "purchase" and not purchased and stage in (None, "awareness", "consideration"):
        return "purchase"
    if (t == "purchase" and purchased or t in RETENTION) and stage in ("purchase", "lapsed"):
        return "retention"
    rating = event["properties"].get("rating", "0")
    good_review = t == "review_written" and rating.isdigit() and int(rating) >= 4
    if (t in ADVOCACY or good_review) and stage in ("purchase", "retention"):
        return "advocacy"
    return stage


def transition(event, state):
    key = customer(event)
    stage = state.get("stage")
    purchased = state.get("purchased", False)
    new = step(stage, purchased, event)
    if event["event_type"] == "purchase":
        state.set("purchased", True)
    if new == stage:
        return None
    seq = state.get("sequence", 0) + 1
    state.set("sequence", seq)
    state.set("stage", new)
    return {"customer_key": key, "model": "funnel5", "from": stage, "to": new, "sequence": seq,
            "event_id": event["event_id"], "event_time": event["event_time"]}


def main():
    bootstrap, input_topic, output_topic, group, state_dir = sys.argv[1:6]
    app = Application(broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest",
                      processing_guarantee="exactly-once", state_dir=state_dir, commit_interval=0.1,
                      loglevel="WARNING")
    source = app.topic(input_topic, value_deserializer=ConfluentAvro())
    sink = app.topic(output_topic, value_serializer="json")
    sdf = app.dataframe(source)
    sdf = sdf.group_by(customer, name="customer")
    sdf = sdf.apply(transition, stateful=True).filter(lambda t: t is not None)
    sdf.to_topic(sink)
    app.run()


if __name__ == "__main__":
    main()
