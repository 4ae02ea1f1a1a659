"""Structural checks of deploy/ where no dedicated validator installs here
(no Docker engine for `docker compose config`, no Helm)."""
import json
import pathlib
import re
import sys

import yaml

root = pathlib.Path(__file__).resolve().parent.parent / "deploy"
errors = []

compose = yaml.safe_load((root / "compose.yaml").read_text())
for name in ("kafka", "worker-0", "worker-1", "prometheus", "grafana"):
    if name not in compose.get("services", {}):
        errors.append(f"compose.yaml: service {name} missing")
for name, svc in compose["services"].items():
    if "image" not in svc and "build" not in svc:
        errors.append(f"compose.yaml: service {name} has neither image nor build")

metrics_rs = (root.parent / "crates/journey-worker/src/metrics.rs").read_text()
known = set(re.findall(r'"(journey_[a-z_]+)"', metrics_rs))
dash = json.loads((root / "grafana/dashboards/journey.json").read_text())
for p in dash["panels"]:
    if not p.get("targets"):
        errors.append(f"dashboard panel {p['title']!r} has no query")
    for t in p.get("targets", []):
        for m in re.findall(r"journey_[a-z_]+", t["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", m)
            if base not in known:
                errors.append(f"dashboard panel {p['title']!r} uses unknown metric {m}")
for doc in yaml.safe_load_all((root / "prometheus/alerts.yml").read_text()):
    for g in doc["groups"]:
        for r in g["rules"]:
            for m in re.findall(r"journey_[a-z_]+", r["expr"]):
                if m not in known:
                    errors.append(f"alert {r['alert']} uses unknown metric {m}")

if errors:
    print("\n".join(errors))
    sys.exit(1)
print("deploy/: compose, dashboard and alert metric names ok")
