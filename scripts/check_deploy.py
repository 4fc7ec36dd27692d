#!/usr/bin/env python3
"""Checks that deploy/ and k8s/ describe the code as it is; run by `make check-deploy` (and so by
`make test`) through scripts/check-deploy.sh, which provides the pinned Python tools.

  check_deploy.py check             render every kustomization, validate, cross-check
  check_deploy.py gen-keda [--write]  print (or write) k8s/components/keda/scaledobjects.yaml

What `check` proves, each with a message naming the file and object at fault:
* every kustomization renders (`kubectl kustomize`), and every rendered object validates against
  the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields fail) for the oldest
  and the newest Kubernetes version we support; custom resources (KEDA, Prometheus Operator,
  CloudNativePG) get a structural check of their own;
* binaries and Deployments match: each service binary of the workspace (the [[bin]] names in
  services/*/Cargo.toml, except `patchbay`, the all-in-one and CLI) has exactly one Deployment
  `patchbay-<bin>` whose container `<bin>` runs the image ghcr.io/patchbay/patchbay-<bin>, and no
  Deployment runs an image of a binary that does not exist; the Dockerfile has a target per
  binary and the compose file a service per binary;
* every pod keeps the house rules: non-root, read-only root file system, no capabilities,
  RuntimeDefault seccomp, no service account token, no service links, probes on /healthz and
  /readyz, requests and limits, a grace period longer than PATCHBAY_SHUTDOWN_GRACE_MS plus the
  preStop pause, secrets only from patchbay-secrets, every PATCHBAY_* key documented;
* companions exist: Service, PodDisruptionBudget and ServiceAccount per Deployment, autoscalers
  and ScaledObjects aim at real Deployments, KEDA's triggers name exactly the partition consumers
  of the code's topology and never ask for more replicas than partitions;
* metric names and outcome labels used by alerts and docs exist in the Rust sources;
* deploy/compose.yaml validates against the Compose Specification schema.
A self-test first feeds the cross-checks broken input, so they cannot pass by checking nothing.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
IMAGE_REPO = "ghcr.io/patchbay/"
ALL_IN_ONE = "patchbay"
SECRET_NAME = "patchbay-secrets"
SECRET_KEYS = {"master-key", "master-key-accepted", "database-url", "admin-token"}
# Every service's own NATS user (`patchbay nats-auth`): key = the service (the Job: migrate).
NATS_SECRET = "patchbay-nats"
# Kubernetes versions the manifests must validate against: the oldest we support (preStop
# `sleep` is on by default from 1.30) and the newest kubernetes-validate knows.
KUBE_VERSIONS = ["1.30.0", "1.37.0"]
KUSTOMIZATIONS = [
    "k8s/base",
    "k8s/overlays/dev",
    "k8s/overlays/production",
    "k8s/overlays/production-keda",
]
STANDALONE = ["k8s/postgres/cluster.yaml"]
PUBLIC_PREFIXES = ("ingress-",)
PUBLIC_NAMES = {"api", "console"}
PRESTOP_MARGIN_S = 5
# Keys the manifests set before docs/configuration.md names them: the change that adds them to
# the code documents them. Listed here only until then (a note says when to remove one).
PENDING_KEYS: dict[str, str] = {}
KEDA_FILE = "k8s/components/keda/scaledobjects.yaml"
NATS_MONITORING = "nats-headless.nats.svc.cluster.local:8222"

# The JetStream workers KEDA scales: service -> (stream, durable consumer, trigger name stem).
# Their names are checked against shared/contract/src/topology.rs.
KEDA_WORKERS = {
    "normaliser": {"target": 1000, "consumers": [("INGRESS", "normaliser", "ingress")]},
    "bot-router": {
        "target": 500,
        "consumers": [
            ("INBOUND", "router-inbound", "inbound"),
            ("SEND", "router-send", "send"),
            ("STATUS", "router-status", "status"),
        ],
    },
    "webhook-dispatcher": {"target": 200, "consumers": [("DISPATCH", "webhook-dispatcher", "dispatch")]},
    "outbound-telegram": {
        "target": 200,
        "consumers": [("OUTBOUND", "outbound-telegram", "outbound"), ("BULK", "bulk-telegram", "bulk")],
    },
    "outbound-messenger": {
        "target": 200,
        "consumers": [("OUTBOUND", "outbound-messenger", "outbound"), ("BULK", "bulk-messenger", "bulk")],
    },
    "outbound-whatsapp": {
        "target": 200,
        "consumers": [("OUTBOUND", "outbound-whatsapp", "outbound"), ("BULK", "bulk-whatsapp", "bulk")],
    },
    "outbound-wechat": {
        "target": 200,
        "consumers": [("OUTBOUND", "outbound-wechat", "outbound"), ("BULK", "bulk-wechat", "bulk")],
    },
    "outbound-kik": {
        "target": 200,
        "consumers": [("OUTBOUND", "outbound-kik", "outbound"), ("BULK", "bulk-kik", "bulk")],
    },
    "outbound-viber": {
        "target": 200,
        "consumers": [("OUTBOUND", "outbound-viber", "outbound"), ("BULK", "bulk-viber", "bulk")],
    },
    "outbound-line": {
        "target": 200,
        "consumers": [("OUTBOUND", "outbound-line", "outbound"), ("BULK", "bulk-line", "bulk")],
    },
}
KEDA_PARTITIONS = 8  # the base's PATCHBAY_PARTITIONS; every render checks its own value


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pending: set[str] = field(default_factory=set)

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def note(self, message: str) -> None:
        self.notes.append(message)


# ----------------------------------------------------------------------------- the workspace


def workspace_binaries() -> list[str]:
    """The [[bin]] names of services/*/Cargo.toml (the package name when no [[bin]] is given)."""
    bins = []
    for manifest in sorted(ROOT.glob("services/*/Cargo.toml")):
        data = tomllib.loads(manifest.read_text())
        declared = [b["name"] for b in data.get("bin", [])]
        if not declared and (manifest.parent / "src/main.rs").exists():
            declared = [data["package"]["name"]]
        bins.extend(declared)
    return bins


def documented_keys() -> set[str]:
    text = (ROOT / "docs/configuration.md").read_text()
    return set(re.findall(r"`(PATCHBAY_[A-Z0-9_]+)`", text))


@functools.cache
def rust_sources() -> str:
    return "\n".join(p.read_text() for d in ("shared", "services") for p in sorted((ROOT / d).rglob("*.rs")))


def topology_consumers() -> dict[str, str]:
    """Durable consumer name -> stream token (upper case), from the messaging contract."""
    text = (ROOT / "shared/contract/src/topology.rs").read_text()
    found = {d: s.upper() for d, s in re.findall(r'pipeline\(\s*"([a-z0-9-]+)",\s*Stream::(\w+)', text)}
    for durable, bulk in re.findall(r'Platform::\w+\s*=>\s*\("(outbound-[a-z0-9-]+)",\s*"(bulk-[a-z0-9-]+)"\)', text):
        found[durable] = "OUTBOUND"
        found[bulk] = "BULK"
    return found


# ----------------------------------------------------------------------------- rendering


def render(path: str) -> list[dict]:
    result = subprocess.run(["kubectl", "kustomize", str(ROOT / path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{path}: kubectl kustomize failed:\n{result.stderr.strip()}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def load_file(path: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ROOT / path).read_text()) if d]


def name_of(doc: dict) -> str:
    return f"{doc.get('kind', '?')}/{doc.get('metadata', {}).get('name', '?')}"


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def image_repo(image: str) -> str:
    """ghcr.io/patchbay/patchbay-api:0.1.0 -> ghcr.io/patchbay/patchbay-api"""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    return image[: len(image) - len(last)] + last.split(":", 1)[0]


# ----------------------------------------------------------------------------- schemas


def kubernetes_validator():
    import kubernetes_validate.utils as kv

    # kubernetes-validate reads and parses the (1.8 MB) definitions file on every call; the files
    # never change, so keep them (200 ms instead of 10 s for all our objects).
    if hasattr(kv, "schema_contents"):
        kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)
    return kv


def crd_shape(doc: dict) -> list[str]:
    """Structural checks for the custom resources kubernetes-validate does not know."""
    kind, spec, errors = doc["kind"], doc.get("spec") or {}, []
    if kind == "ScaledObject":
        if not (spec.get("scaleTargetRef") or {}).get("name"):
            errors.append("spec.scaleTargetRef.name is missing")
        if not spec.get("triggers"):
            errors.append("spec.triggers is empty")
        for t in spec.get("triggers", []):
            if not t.get("type") or not isinstance(t.get("metadata"), dict):
                errors.append(f"trigger {t.get('name')!r} needs a type and metadata")
            elif not all(isinstance(v, str) for v in t["metadata"].values()):
                errors.append(f"trigger {t.get('name')!r}: metadata values must be strings")
    elif kind == "ServiceMonitor":
        if "selector" not in spec or not spec.get("endpoints"):
            errors.append("spec.selector and spec.endpoints are required")
    elif kind == "PrometheusRule":
        for group in spec.get("groups") or [None]:
            if not group or not group.get("name") or not group.get("rules"):
                errors.append("every group needs a name and rules")
                continue
            for rule in group["rules"]:
                if not rule.get("expr") or not (rule.get("alert") or rule.get("record")):
                    errors.append(f"rule in {group['name']} needs expr and alert or record")
    elif kind == "Cluster":
        if not spec.get("instances") or not (spec.get("storage") or {}).get("size"):
            errors.append("spec.instances and spec.storage.size are required")
    return errors


CRDS = {
    ("keda.sh", "ScaledObject"),
    ("monitoring.coreos.com", "ServiceMonitor"),
    ("monitoring.coreos.com", "PrometheusRule"),
    ("postgresql.cnpg.io", "Cluster"),
}


def validate_objects(where: str, docs: list[dict], report: Report, kv, seen: set) -> None:
    for doc in docs:
        if not all(doc.get(k) for k in ("apiVersion", "kind")) or not doc.get("metadata", {}).get("name"):
            report.fail(where, f"object without apiVersion, kind or metadata.name: {str(doc)[:80]}")
            continue
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        if (group, doc["kind"]) in CRDS:
            for e in crd_shape(doc):
                report.fail(where, f"{name_of(doc)}: {e}")
            continue
        key = json.dumps(doc, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        for version in KUBE_VERSIONS:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                report.fail(where, f"{name_of(doc)}: Kubernetes {version}: {path}: {e.message}")
            except kv.SchemaNotFoundError as e:
                report.fail(where, f"{name_of(doc)}: {e.message} (a custom resource needs a check in CRDS)")


# ----------------------------------------------------------------------------- cross-checks


def check_binaries(where: str, bins: list[str], docs: list[dict]) -> list[str]:
    """Every binary has one Deployment running its image; every Deployment runs a real binary."""
    errors = []
    service_bins = [b for b in bins if b != ALL_IN_ONE]
    deployments = by_kind(docs, "Deployment")
    runs: dict[str, list[str]] = {}
    for name, d in deployments.items():
        containers = d["spec"]["template"]["spec"]["containers"]
        repo = image_repo(containers[0]["image"])
        if not repo.startswith(IMAGE_REPO + "patchbay-"):
            errors.append(f"Deployment {name}: image {containers[0]['image']} is not {IMAGE_REPO}patchbay-<binary>")
            continue
        binary = repo[len(IMAGE_REPO + "patchbay-") :]
        runs.setdefault(binary, []).append(name)
        if binary not in service_bins:
            errors.append(f"Deployment {name} runs {repo}, but no service binary {binary!r} exists in services/*/Cargo.toml")
        if name != f"patchbay-{binary}" or containers[0]["name"] != binary:
            errors.append(f"Deployment {name}: expected name patchbay-{binary} with container {binary!r}")
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") != binary:
            errors.append(f"Deployment {name}: label app.kubernetes.io/component should be {binary!r}")
    for b in service_bins:
        if b not in runs:
            errors.append(f"binary {b!r} (services/*/Cargo.toml) has no Deployment patchbay-{b} running {IMAGE_REPO}patchbay-{b}")
        elif len(runs[b]) > 1:
            errors.append(f"binary {b!r} runs in several Deployments: {', '.join(runs[b])}")
    for name, job in by_kind(docs, "Job").items():
        for c in job["spec"]["template"]["spec"]["containers"]:
            if image_repo(c["image"]) != IMAGE_REPO + ALL_IN_ONE:
                errors.append(f"Job {name}: runs {c['image']}, expected {IMAGE_REPO}{ALL_IN_ONE}")
            elif ALL_IN_ONE not in bins:
                errors.append(f"Job {name}: the binary {ALL_IN_ONE!r} does not exist")
    return [f"{where}: {e}" for e in errors]


def config_data(docs: list[dict]) -> dict[str, str]:
    maps = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("patchbay-config")]
    return maps[0].get("data", {}) if len(maps) == 1 else {}


def check_env_keys(where: str, keys: set[str], documented: set[str], report: Report) -> None:
    for key in sorted(keys):
        if key in documented:
            continue
        if key in PENDING_KEYS:
            report.pending.add(key)
        else:
            report.fail(where, f"{key} is not a documented setting (docs/configuration.md); a typo?")
    for key in PENDING_KEYS:
        if key in documented:
            report.note(f"{key} is documented now: remove it from PENDING_KEYS in scripts/check_deploy.py")


def check_pods(where: str, docs: list[dict], documented: set[str], report: Report) -> None:
    config = config_data(docs)
    if not config:
        report.fail(where, "expected exactly one ConfigMap patchbay-config")
    check_env_keys(where, set(config), documented, report)
    grace_ms = int(config.get("PATCHBAY_SHUTDOWN_GRACE_MS", "10000"))
    config_maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    accounts = by_kind(docs, "ServiceAccount")
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        who = f"{where}: {name_of(doc)}"
        pod = doc["spec"]["template"]["spec"]
        sc = pod.get("securityContext", {})
        if not (sc.get("runAsNonRoot") and isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] > 0):
            report.fail(who, "pod must set runAsNonRoot and a numeric non-zero runAsUser")
        if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            report.fail(who, "pod must use seccompProfile RuntimeDefault")
        if pod.get("automountServiceAccountToken") is not False:
            report.fail(who, "automountServiceAccountToken must be false")
        if pod.get("enableServiceLinks") is not False:
            report.fail(who, "enableServiceLinks must be false (Services named patchbay-* inject PATCHBAY_* variables)")
        sa = accounts.get(pod.get("serviceAccountName", ""))
        if sa is None or sa.get("automountServiceAccountToken") is not False:
            report.fail(who, f"ServiceAccount {pod.get('serviceAccountName')!r} missing or mounting its token")
        for c in pod["containers"]:
            csc = c.get("securityContext", {})
            if not (
                csc.get("readOnlyRootFilesystem") is True
                and csc.get("allowPrivilegeEscalation") is False
                and (csc.get("capabilities") or {}).get("drop") == ["ALL"]
            ):
                report.fail(who, f"container {c['name']}: needs readOnlyRootFilesystem, no privilege escalation, drop ALL")
            res = c.get("resources", {})
            if not all(k in res.get(t, {}) for t in ("requests", "limits") for k in ("cpu", "memory")):
                report.fail(who, f"container {c['name']}: needs cpu and memory requests and limits")
            if ":" not in c["image"].rsplit("/", 1)[-1] and "@" not in c["image"]:
                report.fail(who, f"container {c['name']}: image {c['image']} has no tag")
            for src in c.get("envFrom", []):
                ref = (src.get("configMapRef") or {}).get("name")
                if ref and ref not in config_maps:
                    report.fail(who, f"envFrom names ConfigMap {ref!r}, which is not rendered")
            env_names = set()
            role = "migrate" if doc["kind"] == "Job" else doc["metadata"]["name"].removeprefix("patchbay-")
            for e in c.get("env", []):
                env_names.add(e["name"])
                secret = ((e.get("valueFrom") or {}).get("secretKeyRef")) or {}
                if secret and secret.get("name") == NATS_SECRET:
                    if e["name"] != "PATCHBAY_NATS_PASSWORD" or secret.get("key") != role:
                        report.fail(who, f"{e['name']}: {NATS_SECRET} key {secret.get('key')!r} is another role's; this pod is {role!r}")
                elif secret and (secret.get("name") != SECRET_NAME or secret.get("key") not in SECRET_KEYS):
                    report.fail(who, f"{e['name']}: secrets come from {SECRET_NAME} keys {sorted(SECRET_KEYS)}")
            if "PATCHBAY_NATS_PASSWORD" not in env_names:
                report.fail(who, f"container {c['name']}: no PATCHBAY_NATS_PASSWORD ({NATS_SECRET} key {role!r}): NATS is locked down per service")
            check_env_keys(who, {n for n in env_names if n.startswith("PATCHBAY_")}, documented, report)
            if doc["kind"] != "Deployment":
                continue
            for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                if (c.get(probe, {}).get("httpGet") or {}).get("path") != path:
                    report.fail(who, f"container {c['name']}: {probe} must GET {path}")
            pause = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
            needed = -(-grace_ms // 1000) + pause + PRESTOP_MARGIN_S
            tgps = pod.get("terminationGracePeriodSeconds", 30)
            if tgps < needed:
                report.fail(
                    who,
                    f"terminationGracePeriodSeconds {tgps} < {needed} (PATCHBAY_SHUTDOWN_GRACE_MS {grace_ms} ms"
                    f" + preStop {pause} s + {PRESTOP_MARGIN_S} s to exit)",
                )


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def check_companions(where: str, docs: list[dict], report: Report) -> None:
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    pdbs = list(by_kind(docs, "PodDisruptionBudget").values())
    for name, d in deployments.items():
        labels = d["spec"]["template"]["metadata"]["labels"]
        component = labels.get("app.kubernetes.io/component", "")
        svc = services.get(name)
        if svc is None or not svc["spec"].get("selector") or not all(
            labels.get(k) == v for k, v in svc["spec"]["selector"].items()
        ):
            report.fail(where, f"Deployment {name}: no Service {name} selecting its pods (metrics, probes, traffic)")
        if not any(selects(p["spec"]["selector"], labels) for p in pdbs):
            report.fail(where, f"Deployment {name}: no PodDisruptionBudget selects its pods")
        public = component in PUBLIC_NAMES or component.startswith(PUBLIC_PREFIXES)
        if (labels.get("patchbay.dev/exposure") == "public") != public:
            report.fail(where, f"Deployment {name}: only ingress-*, api and console carry patchbay.dev/exposure=public")
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for name, o in by_kind(docs, kind).items():
            target = o["spec"]["scaleTargetRef"]["name"]
            if target not in deployments:
                report.fail(where, f"{kind} {name} scales {target!r}, which is not a Deployment here")
            elif "replicas" in deployments[target]["spec"]:
                report.fail(where, f"{kind} {name}: Deployment {target} sets spec.replicas, which fights the autoscaler")
    policies = by_kind(docs, "NetworkPolicy")
    deny = policies.get("patchbay-default-deny")
    if deny is None or deny["spec"].get("policyTypes") != ["Ingress", "Egress"] or deny["spec"].get("ingress") or deny["spec"].get("egress"):
        report.fail(where, "NetworkPolicy patchbay-default-deny (Ingress and Egress, no rules) is missing")
    # Only the public pods may be reached from anywhere: an ingress rule without `from`.
    for name, p in policies.items():
        for rule in p["spec"].get("ingress", []):
            if not rule.get("from") and p["spec"]["podSelector"].get("matchLabels", {}).get("patchbay.dev/exposure") != "public":
                report.fail(where, f"NetworkPolicy {name} opens non-public pods to every source")
    # The migration phase (`kubectl apply -l patchbay.dev/install-phase=migrate`) is self-contained.
    phase = [d for d in docs if d["metadata"].get("labels", {}).get("patchbay.dev/install-phase") == "migrate"]
    kinds = sorted(d["kind"] for d in phase)
    if kinds != ["ConfigMap", "Job", "ServiceAccount"]:
        report.fail(where, f"install phase 'migrate' should hold ConfigMap, Job and ServiceAccount, has {kinds}")


def check_keda(where: str, docs: list[dict], consumers: dict[str, str], report: Report) -> None:
    scaled = by_kind(docs, "ScaledObject")
    if not scaled:
        return
    config = config_data(docs)
    partitions = int(config.get("PATCHBAY_PARTITIONS", "0") or 0)
    prefix = config.get("PATCHBAY_NATS_PREFIX", "pb").replace("-", "_").upper()
    for name, so in scaled.items():
        who = f"{where}: ScaledObject {name}"
        spec = so["spec"]
        if partitions <= 0:
            report.fail(who, "PATCHBAY_PARTITIONS is not set in the ConfigMap")
            return
        if spec.get("maxReplicaCount", 100) > partitions:
            report.fail(who, f"maxReplicaCount {spec.get('maxReplicaCount', 100)} > PATCHBAY_PARTITIONS {partitions}: extra replicas would only stand by")
        by_durable: dict[str, set[int]] = {}
        for t in spec.get("triggers", []):
            md = t.get("metadata", {})
            if t.get("type") != "nats-jetstream":
                continue
            m = re.fullmatch(r"(.+)-p(\d+)", md.get("consumer", ""))
            if not m:
                report.fail(who, f"trigger {t.get('name')}: consumer {md.get('consumer')!r} is not <durable>-p<N>")
                continue
            durable, n = m.group(1), int(m.group(2))
            if durable not in consumers:
                report.fail(who, f"trigger {t.get('name')}: no consumer {durable!r} in shared/contract/src/topology.rs")
            elif md.get("stream") != f"{prefix}_{consumers[durable]}":
                report.fail(who, f"trigger {t.get('name')}: {durable} reads {prefix}_{consumers[durable]}, not {md.get('stream')}")
            by_durable.setdefault(durable, set()).add(n)
        for durable, ns in by_durable.items():
            if ns != set(range(partitions)):
                report.fail(
                    who,
                    f"{durable}: triggers for partitions {sorted(ns)}, expected 0..{partitions - 1} (KEDA reads a missing"
                    " consumer as the whole stream's length); regenerate with scripts/check_deploy.py gen-keda --write",
                )
        formula = ((spec.get("advanced") or {}).get("scalingModifiers") or {}).get("formula", "")
        names = {t.get("name") for t in spec.get("triggers", [])}
        if set(re.findall(r"[a-z_][a-z0-9_]*", formula)) != names:
            report.fail(who, "scalingModifiers.formula must sum every trigger by name")


def check_metric_names(report: Report) -> None:
    """Metric names and outcome values that alerts and docs use exist in the Rust sources."""
    src = rust_sources()
    for where in ("k8s/overlays/production/prometheusrule.yaml", "docs/kubernetes.md"):
        if not (ROOT / where).exists():
            report.fail(where, "missing")
            continue
        text = (ROOT / where).read_text()
        for metric in sorted(set(re.findall(r"\b(patchbay_[a-z0-9_]+)", text))):
            # A histogram's series: `<name>_bucket`, `_sum`, `_count`.
            base = re.sub(r"_(seconds|size)_(bucket|sum|count)$", r"_\1", metric)
            if f'"{base}"' not in src:
                report.fail(where, f"metric {metric} is not emitted anywhere in shared/ or services/")
        for values in re.findall(r'outcome=~?"([a-z_|\\]+)"', text):
            for value in values.replace("\\", "").split("|"):
                if f'"{value}"' not in src:
                    report.fail(where, f'outcome="{value}" is never emitted by the Rust code')


def dockerfile_targets() -> dict[str, str]:
    """Stage name -> its ENTRYPOINT binary path."""
    text = (ROOT / "deploy/Dockerfile").read_text()
    stages: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if m := re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.I):
            current = m.group(1)
            stages[current] = ""
        elif current and (m := re.match(r'ENTRYPOINT\s+\["([^"]+)"', line)):
            stages[current] = m.group(1)
    return stages


def check_dockerfile(bins: list[str], report: Report) -> None:
    stages = dockerfile_targets()
    for b in bins:
        if stages.get(b) != f"/usr/local/bin/{b}":
            report.fail("deploy/Dockerfile", f"no target {b!r} with ENTRYPOINT [\"/usr/local/bin/{b}\"]")
    for stage, entry in stages.items():
        if entry and stage not in bins:
            report.fail("deploy/Dockerfile", f"target {stage!r} runs {entry}, but there is no binary {stage!r}")


def compose_schema() -> dict:
    from importlib.resources import files

    return json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())


def check_compose(bins: list[str], documented: set[str], report: Report) -> None:
    where = "deploy/compose.yaml"
    doc = yaml.safe_load((ROOT / where).read_text())
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        report.fail(where, f"{'.'.join(str(p) for p in e.path) or '<root>'}: {e.message} (Compose Specification)")
    services = doc.get("services", {})
    for b in bins:
        name = "migrate" if b == ALL_IN_ONE else b
        svc = services.get(name)
        if svc is None:
            report.fail(where, f"no service {name!r} for the binary {b!r}")
            continue
        if (svc.get("build") or {}).get("target") != b:
            report.fail(where, f"service {name}: build.target should be {b!r}")
        if not (svc.get("read_only") is True and svc.get("user") and svc.get("cap_drop") == ["ALL"]):
            report.fail(where, f"service {name}: needs read_only, a non-root user and cap_drop [ALL]")
        if b != ALL_IN_ONE and (svc.get("depends_on") or {}).get("migrate", {}).get("condition") != "service_completed_successfully":
            report.fail(where, f"service {name}: must wait for migrate (service_completed_successfully)")
        check_env_keys(f"{where}: {name}", {k for k in (svc.get("environment") or {}) if k.startswith("PATCHBAY_")}, documented, report)
    for name, svc in services.items():
        target = (svc.get("build") or {}).get("target")
        if target and target not in bins:
            report.fail(where, f"service {name} builds target {target!r}, which is no binary")


def check_nats_values(rendered: dict[str, list[dict]], report: Report) -> None:
    """k8s/nats/values.yaml gives the cluster the manifests and the docs assume."""
    where = "k8s/nats/values.yaml"
    values = yaml.safe_load((ROOT / where).read_text())
    config = values.get("config", {})
    js = config.get("jetstream", {})
    if not (js.get("enabled") and js.get("fileStore", {}).get("enabled") and js["fileStore"].get("pvc", {}).get("enabled")):
        report.fail(where, "JetStream with file storage on persistent volumes must be enabled")
    if (js.get("merge") or {}).get("sync_interval") != "always":
        report.fail(where, "jetstream sync_interval is not `always`; docs/kubernetes.md explains the choice: change both")
    servers = config.get("cluster", {}).get("replicas", 1) if config.get("cluster", {}).get("enabled") else 1
    for path, docs in rendered.items():
        wanted = int(config_data(docs).get("PATCHBAY_NATS_REPLICAS", "1"))
        if path != "k8s/overlays/dev" and wanted > servers:
            report.fail(where, f"{servers} server(s), but {path} asks for R{wanted} streams")
    includes = [v for k, v in (config.get("merge") or {}).items() if k.endswith("$include")]
    mounts = [p.get("value", {}) for p in (values.get("container", {}).get("patch") or [])]
    volumes = [p.get("value", {}) for p in (values.get("podTemplate", {}).get("patch") or [])]
    if not (
        "../nats-auth/auth.conf" in includes
        and any(m.get("mountPath") == "/etc/nats-auth" for m in mounts)
        and any((v.get("secret") or {}).get("secretName") == "patchbay-nats-auth" for v in volumes)
    ):
        report.fail(where, "the servers must include `patchbay nats-auth`'s auth.conf from the Secret patchbay-nats-auth (NATS is locked down per service)")
    port = str(config.get("monitor", {}).get("port", ""))
    if not (config.get("monitor", {}).get("enabled") and NATS_MONITORING.endswith(":" + port)):
        report.fail(where, f"monitoring must be enabled on the port KEDA reads ({NATS_MONITORING})")
    tag = str(values.get("container", {}).get("image", {}).get("tag", ""))
    m = re.match(r"(\d+)\.(\d+)", tag)
    if not m or (int(m.group(1)), int(m.group(2))) < (2, 11):
        report.fail(where, f"NATS image tag {tag!r}: 2.11 or later is needed (pinned-client priority groups)")


def check_alert_syntax(report: Report) -> None:
    """promtool, where installed, parses the alert rules; otherwise only their names are checked."""
    promtool = shutil.which("promtool")
    if not promtool:
        report.note("promtool not installed: alert expressions checked for metric names only")
        return
    rule = yaml.safe_load((ROOT / "k8s/overlays/production/prometheusrule.yaml").read_text())
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(rule["spec"], f)
        f.flush()
        result = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
    if result.returncode != 0:
        report.fail("k8s/overlays/production/prometheusrule.yaml", f"promtool: {(result.stdout + result.stderr).strip()}")


# ----------------------------------------------------------------------------- KEDA generator


def generate_keda(partitions: int = KEDA_PARTITIONS) -> str:
    out = [
        "# Generated by `scripts/check_deploy.py gen-keda --write`; `make test` fails when it is stale.",
        "#",
        "# KEDA ScaledObjects for the JetStream workers, on consumer lag (pending + unacknowledged).",
        "# KEDA's nats-jetstream scaler reads one consumer per trigger, and every worker reads one",
        f"# durable consumer per partition (<durable>-p0 … -p{partitions - 1}), so each ScaledObject has a trigger",
        "# per partition consumer and scalingModifiers sums them: the desired replicas are the",
        "# worker's total lag divided by the per-replica target. maxReplicaCount is the partition",
        "# count: a replica beyond it would own no partition. Needs KEDA 2.12 or later.",
    ]
    for service, spec in KEDA_WORKERS.items():
        triggers, names = [], []
        for stream, durable, stem in spec["consumers"]:
            for n in range(partitions):
                name = f"{stem}_p{n}"
                names.append(name)
                triggers.append(
                    "\n".join(
                        [
                            "    - type: nats-jetstream",
                            f"      name: {name}",
                            "      metadata:",
                            f'        natsServerMonitoringEndpoint: "{NATS_MONITORING}"',
                            '        account: "$G"',
                            f'        stream: "PB_{stream}"',
                            f'        consumer: "{durable}-p{n}"',
                            f'        lagThreshold: "{spec["target"]}"',
                        ]
                    )
                )
        out += [
            "---",
            "apiVersion: keda.sh/v1alpha1",
            "kind: ScaledObject",
            "metadata:",
            f"  name: patchbay-{service}",
            "  labels:",
            f"    app.kubernetes.io/component: {service}",
            "    app.kubernetes.io/part-of: patchbay",
            "spec:",
            f"  scaleTargetRef: {{name: patchbay-{service}}}",
            "  minReplicaCount: 1",
            f"  maxReplicaCount: {partitions}",
            "  pollingInterval: 30",
            "  cooldownPeriod: 300",
            "  advanced:",
            "    scalingModifiers:",
            f'      target: "{spec["target"]}"',
            '      activationTarget: "1"',
            "      metricType: AverageValue",
            f'      formula: "{" + ".join(names)}"',
            "    horizontalPodAutoscalerConfig:",
            "      behavior:",
            "        scaleDown:",
            "          # A partition moves only after its owner drained it; shrink slowly.",
            "          stabilizationWindowSeconds: 300",
            "          policies: [{type: Pods, value: 1, periodSeconds: 60}]",
            "  triggers:",
            *triggers,
        ]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- self-test


def self_test(bins: list[str], base: list[dict], consumers: dict[str, str]) -> list[str]:
    """Feeds the cross-checks broken input; returns what they failed to catch."""
    missed = []
    # A binary without a Deployment.
    if not any("'ghost' " in e for e in check_binaries("t", bins + ["ghost"], base)):
        missed.append("a binary without a Deployment")
    # A Deployment whose binary does not exist.
    rogue = copy.deepcopy(next(iter(by_kind(base, "Deployment").values())))
    rogue["metadata"]["name"] = "patchbay-phantom"
    rogue["spec"]["template"]["spec"]["containers"][0]["image"] = IMAGE_REPO + "patchbay-phantom:1"
    if not any("'phantom'" in e for e in check_binaries("t", bins, base + [rogue])):
        missed.append("a Deployment naming a binary that does not exist")
    # A missing Deployment.
    first = bins[0] if bins[0] != ALL_IN_ONE else bins[1]
    if not check_binaries("t", bins, [d for d in base if d["metadata"]["name"] != f"patchbay-{first}"]):
        missed.append("a Deployment removed from the base")
    # A grace period shorter than the drain deadline, a pod running as root, an undocumented key.
    r = Report()
    broken = copy.deepcopy(base)
    for d in broken:
        if d["kind"] == "Deployment":
            d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 3
            d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False
            d["spec"]["template"]["spec"]["containers"][0].setdefault("env", []).append({"name": "PATCHBAY_NATS_REPLICA", "value": "3"})
            break
    check_pods("t", broken, documented_keys(), r)
    for what, needle in (("a short grace period", "terminationGracePeriodSeconds"), ("a root pod", "runAsNonRoot"), ("a misspelt key", "PATCHBAY_NATS_REPLICA ")):
        if not any(needle in p for p in r.problems):
            missed.append(what)
    # A pod given another service's NATS password, and one given none.
    r = Report()
    broken = copy.deepcopy(base)
    deployments = [d for d in broken if d["kind"] == "Deployment"]
    for e in deployments[0]["spec"]["template"]["spec"]["containers"][0]["env"]:
        if e["name"] == "PATCHBAY_NATS_PASSWORD":
            e["valueFrom"]["secretKeyRef"]["key"] = "auth" if "auth" not in deployments[0]["metadata"]["name"] else "api"
    c = deployments[1]["spec"]["template"]["spec"]["containers"][0]
    c["env"] = [e for e in c["env"] if e["name"] != "PATCHBAY_NATS_PASSWORD"]
    check_pods("t", broken, documented_keys(), r)
    if not any("is another role's" in p for p in r.problems):
        missed.append("a pod with another service's NATS password")
    if not any("no PATCHBAY_NATS_PASSWORD" in p for p in r.problems):
        missed.append("a pod without a NATS password")
    # A KEDA trigger set one partition short.
    keda = [d for d in yaml.safe_load_all(generate_keda(KEDA_PARTITIONS - 1)) if d]
    r = Report()
    check_keda("t", base + keda, consumers, r)
    if not any("expected 0.." in p for p in r.problems):
        missed.append("KEDA triggers that miss a partition")
    # Schema validation is strict.
    kv = kubernetes_validator()
    bad = copy.deepcopy(next(iter(by_kind(base, "Deployment").values())))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    r = Report()
    validate_objects("t", [bad], r, kv, set())
    if not r.problems:
        missed.append("an unknown field in a Deployment")
    return missed


# ----------------------------------------------------------------------------- main


def check() -> int:
    report = Report()
    bins = workspace_binaries()
    if ALL_IN_ONE not in bins or len(bins) < 2:
        print(f"check-deploy: found binaries {bins} in services/*/Cargo.toml; expected {ALL_IN_ONE!r} and the services")
        return 1
    documented = documented_keys()
    consumers = topology_consumers()
    if not consumers:
        report.fail("shared/contract/src/topology.rs", 'no consumer found (`pipeline("<durable>", Stream::<S>`); update topology_consumers()')
    for durable, spec in ((d, s) for w in KEDA_WORKERS.values() for s, d, _ in w["consumers"]):
        if consumers.get(durable) != spec:
            report.fail("scripts/check_deploy.py", f"KEDA_WORKERS names {durable} on {spec}; topology.rs has {consumers.get(durable)}")
    kv = kubernetes_validator()
    seen: set = set()
    rendered = {}
    for path in KUSTOMIZATIONS:
        try:
            rendered[path] = render(path)
        except RuntimeError as e:
            report.fail(path, str(e))
    for path, docs in rendered.items():
        if path.startswith("k8s/overlays/"):
            for d in docs:
                if not d["metadata"].get("namespace"):
                    report.fail(path, f"{name_of(d)} has no namespace (set `namespace:` in the overlay)")
        validate_objects(path, docs, report, kv, seen)
        report.problems += check_binaries(path, bins, docs)
        check_pods(path, docs, documented, report)
        check_companions(path, docs, report)
        check_keda(path, docs, consumers, report)
    for path in STANDALONE:
        validate_objects(path, load_file(path), report, kv, seen)
    if (ROOT / KEDA_FILE).read_text() != generate_keda():
        report.fail(KEDA_FILE, "stale; regenerate with scripts/check_deploy.py gen-keda --write")
    check_metric_names(report)
    check_alert_syntax(report)
    check_nats_values(rendered, report)
    check_dockerfile(bins, report)
    check_compose(bins, documented, report)
    if "k8s/base" in rendered and not report.problems:
        for what in self_test(bins, rendered["k8s/base"], consumers):
            report.fail("self-test", f"the checks did not catch {what}")
    elif report.problems:
        report.note("self-test skipped: it needs manifests that pass")
    everything = [d for docs in rendered.values() for d in docs] + [d for p in STANDALONE for d in load_file(p)]
    crds = sorted({d["kind"] for d in everything if d["apiVersion"].split("/")[0] in {g for g, _ in CRDS}})
    objects = sum(len(d) for d in rendered.values())
    for key in sorted(report.pending):
        report.note(f"{key} is set but not in docs/configuration.md yet ({PENDING_KEYS[key]}); tolerated")
    for n in sorted(set(report.notes)):
        print(f"check-deploy: note: {n}")
    print(
        f"check-deploy: {len(rendered)} kustomizations, {objects} objects (Kubernetes {' and '.join(KUBE_VERSIONS)}, strict;"
        f" {', '.join(crds)} checked by shape, not schema), {len(bins)} binaries, compose file"
    )
    if report.problems:
        for p in report.problems:
            print(f"check-deploy: FAIL {p}")
        print(f"check-deploy: {len(report.problems)} problem(s)")
        return 1
    print("check-deploy: ok")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["gen-keda"]:
        text = generate_keda()
        if argv[1:] == ["--write"]:
            (ROOT / KEDA_FILE).write_text(text)
            print(f"wrote {KEDA_FILE}")
        else:
            sys.stdout.write(text)
        return 0
    if argv in ([], ["check"]):
        return check()
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
