"""The helm chart (helm/lakegate) and the Spark pod template example (helm/examples).

No helm binary can be installed here, so the chart is rendered by tests/helm/render: a small Go program that runs
Helm's own template machinery (Go text/template, sprig 3.2.3 and Helm's extra functions, the same render context
and values coalescing; Go and the libraries from Debian's packages, built offline). Every rendered manifest is then
validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors) for the
oldest Kubernetes the chart supports and the newest the package knows, linted with yamllint, and checked for the
properties a platform team relies on. values.schema.json is checked by the renderer as Helm checks it (gojsonschema)
and again with the Python jsonschema package (draft 7).

Renders: the chart's defaults, tests/helm/values-ha.yaml (TLS, HPA, 3 replicas, issuers) and
tests/helm/values-full.yaml (persistence, inline policies, extraConfig, IPv6, digest, no PDB/NetworkPolicy).
"""

import copy
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import tomllib
import urllib.request

import jsonschema
import kubernetes_validate
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from conftest import BINARY, Lakegate, eventually

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "lakegate"
HELM_TESTS = REPO / "tests" / "helm"
SPARK_TEMPLATE = REPO / "helm" / "examples" / "spark-pod-template.yaml"
# Chart.yaml's kubeVersion floor, and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
DATA_DIR = "/var/lib/lakegate"
AUDIT_DIR = "/var/lib/lakegate-audit"
CASES = {
    "defaults": [],
    "ha": [HELM_TESTS / "values-ha.yaml"],
    "full": [HELM_TESTS / "values-full.yaml"],
}
# The config.toml keys documented in docs/configuration.md that the chart writes.
DOCUMENTED = {
    "": {"data_dir", "control", "s3", "sql", "policy", "identity", "audit", "shutdown"},
    "policy": {"dir", "reload_interval_seconds"},
    "identity": {"dev_issuer", "max_token_bytes", "issuers"},
    "audit": {"dir", "max_file_bytes", "queue_capacity", "enqueue_timeout_ms", "stdout", "fail_open", "durability",
              "batch_window_ms"},
    "shutdown": {"grace"},
}


# --- rendering ---------------------------------------------------------------------------------------------


class RenderError(Exception):
    pass


@pytest.fixture(scope="session")
def renderer():
    """Builds tests/helm/render (offline, from Debian's Go packages) once per session."""
    out = REPO / "target" / "helm-render"
    result = subprocess.run([str(HELM_TESTS / "render" / "build"), str(out)], capture_output=True, text=True)
    assert result.returncode == 0, f"building the chart renderer failed (scripts/install-test-deps installs " \
                                   f"golang-go and the Go libraries):\n{result.stderr}"
    return pathlib.Path(result.stdout.strip())


def render(renderer, values_files=(), chart=CHART, namespace="lakegate", kube_version="1.31.0"):
    args = [str(renderer), "-chart", str(chart), "-name", "lakegate", "-namespace", namespace,
            "-kube-version", kube_version]
    for f in values_files:
        args += ["-f", str(f)]
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise RenderError(result.stderr)
    out = json.loads(result.stdout)
    out["objects"] = [yaml.safe_load(m["content"]) for m in out["manifests"]]
    return out


@pytest.fixture(scope="session")
def rendered(renderer):
    return {name: render(renderer, files) for name, files in CASES.items()}


def the(out, kind, name=None):
    found = [o for o in out["objects"] if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kinds(out):
    return sorted(o["kind"] for o in out["objects"])


def pod_spec(out):
    return the(out, "Deployment")["spec"]["template"]["spec"]


def container(out):
    (c,) = pod_spec(out)["containers"]
    return c


def env(out):
    return {e["name"]: e.get("value") for e in container(out)["env"]}


def mounts(out):
    return {m["mountPath"]: m for m in container(out)["volumeMounts"]}


def volumes(out):
    return {v["name"]: v for v in pod_spec(out)["volumes"]}


def config_toml(out):
    return the(out, "ConfigMap", "lakegate-config")["data"]["config.toml"]


def schema_errors(values):
    schema = json.loads((CHART / "values.schema.json").read_text())
    return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(values)]


def default_values():
    return yaml.safe_load((CHART / "values.yaml").read_text())


# --- Kubernetes schemas, YAML lint -------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(rendered, case, kube):
    out = rendered[case]
    assert out["objects"], "nothing rendered"
    for manifest, obj in zip(out["manifests"], out["objects"]):
        try:
            kubernetes_validate.validate(obj, kube, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{manifest['source']} ({obj['kind']}) is not a valid Kubernetes {kube} object: {e}")


def test_the_renders_hold_the_expected_objects(rendered):
    assert kinds(rendered["defaults"]) == sorted(
        ["ConfigMap", "ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service", "ServiceAccount"])
    assert kinds(rendered["ha"]) == sorted(
        ["ConfigMap", "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "NetworkPolicy", "PodDisruptionBudget",
         "Service", "ServiceAccount"])
    assert kinds(rendered["full"]) == sorted(
        ["ConfigMap", "ConfigMap", "Deployment", "PersistentVolumeClaim", "Service", "ServiceAccount"])
    for out in rendered.values():
        assert all(o["metadata"]["namespace"] == "lakegate" for o in out["objects"])
        # The chart never makes key material: keys come from Secrets the operator created.
        assert "Secret" not in kinds(out)


@pytest.fixture(scope="session")
def lint_config():
    return YamlLintConfig(file=str(HELM_TESTS / "yamllint.yaml"))


def lint(text, config, what):
    problems = [f"{what}:{p.line}:{p.column}: {p.desc} ({p.rule})" for p in linter.run(text, config)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("case", CASES)
def test_rendered_stream_passes_yamllint(rendered, lint_config, case):
    # The stream `helm template` prints.
    stream = "".join(f"---\n# Source: {m['source']}\n{m['content']}\n" for m in rendered[case]["manifests"])
    lint(stream, lint_config, f"render:{case}")


@pytest.mark.parametrize("path", [
    CHART / "Chart.yaml", CHART / "values.yaml", HELM_TESTS / "values-ha.yaml", HELM_TESTS / "values-full.yaml",
    SPARK_TEMPLATE, HELM_TESTS / "yamllint.yaml",
], ids=lambda p: p.name)
def test_chart_yaml_files_pass_yamllint(lint_config, path):
    lint(path.read_text(), lint_config, path.relative_to(REPO))


# --- values.schema.json ------------------------------------------------------------------------------------


def test_values_schema_is_a_valid_draft7_schema_that_accepts_every_test_render(rendered):
    jsonschema.Draft7Validator.check_schema(json.loads((CHART / "values.schema.json").read_text()))
    assert schema_errors(default_values()) == []
    for case, out in rendered.items():
        assert schema_errors(out["values"]) == [], case


@pytest.mark.parametrize("change, expect", [
    (lambda v: v.update(replicaCount=-1), "less than the minimum"),
    (lambda v: v.update(replicaCount="3"), "is not of type 'integer'"),
    (lambda v: v.update(replicas=3), "Additional properties are not allowed ('replicas' was unexpected)"),
    (lambda v: v["config"]["audit"].update(fail_open=True), "'fail_open' was unexpected"),
    (lambda v: v["podSecurityContext"].update(runAsUser=0), "less than the minimum"),
    (lambda v: v["keys"]["credentials"].update(existingSecret=""), "does not match"),
    (lambda v: v["tls"].update(enabled=True), "should be non-empty"),
    (lambda v: v["service"].update(type="ExternalName"), "is not one of"),
    (lambda v: v["image"].update(pullPolicy="Sometimes"), "is not one of"),
    (lambda v: v["config"]["identity"].update(
        issuers=[{"issuer": "https://idp", "audiences": ["lakegate"], "discovery": True, "jwks_url": "https://x"}]),
     "is not valid under any of the given schemas"),
    (lambda v: v["config"]["identity"].update(issuers=[{"issuer": "https://idp", "jwks_url": "https://x"}]),
     "'audiences' is a required property"),
    (lambda v: v["config"]["identity"].update(
        issuers=[{"issuer": "https://idp", "audiences": ["a"], "discovery": True, "algorithms": ["HS256"]}]),
     "is not one of"),
    (lambda v: v["networkPolicy"]["ingress"].update(sql=[{"ports": [5433]}]), "was unexpected"),
    (lambda v: v["policies"].update(files={"../escape.cedar": ""}), "does not match"),
    (lambda v: v["config"]["audit"].update(durability="fsync"), "is not one of"),
    (lambda v: v["config"]["shutdown"].update(graceSeconds="25s"), "is not of type 'integer'"),
], ids=["negative-replicas", "string-replicas", "unknown-top-level-key", "unknown-config-key", "root-uid",
        "no-key-secret", "tls-without-secret", "service-type", "pull-policy", "two-key-sources", "no-audience",
        "hmac-algorithm", "bad-peer", "bad-policy-file-name", "unknown-durability", "grace-as-text"])
def test_values_schema_rejects_bad_values(renderer, tmp_path, change, expect):
    values = default_values()
    change(values)
    errors = schema_errors(values)
    assert errors, "the schema accepted bad values"
    assert any(expect in e for e in errors), errors
    # And so does the render, as `helm install` would (gojsonschema, Helm 3's validator).
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(values))
    with pytest.raises(RenderError, match="values don't meet the specifications of the schema"):
        render(renderer, [bad])


def test_kubernetes_older_than_the_charts_kube_version_is_refused(renderer):
    with pytest.raises(RenderError, match="incompatible with Kubernetes v1.26.3"):
        render(renderer, kube_version="1.26.3")
    render(renderer, kube_version="1.27.0")


# --- properties of the Deployment ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_pods_run_non_root_with_a_read_only_root_and_no_privileges(rendered, case):
    spec = pod_spec(rendered[case])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] > 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    sc = container(rendered[case])["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # Writable places are volumes: the data dir (with its own keys dir), /tmp, and the audit claim if any.
    writable = {p for p, m in mounts(rendered[case]).items() if not m.get("readOnly")}
    assert writable == {DATA_DIR, f"{DATA_DIR}/keys", "/tmp"} | ({AUDIT_DIR} if case == "full" else set())
    vols = volumes(rendered[case])
    assert all("emptyDir" in vols[mounts(rendered[case])[p]["name"]] for p in writable - {AUDIT_DIR})


@pytest.mark.parametrize("case", CASES)
def test_serve_args_ports_probes_and_resources(rendered, case):
    out = rendered[case]
    c = container(out)
    assert c["args"] == ["serve", "--config", "/etc/lakegate/config.toml"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"control": 8080, "s3": 9000, "sql": 5433}
    scheme = "HTTPS" if case == "ha" else "HTTP"
    for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")]:
        get = c[probe]["httpGet"]
        assert (get["path"], ports[get["port"]], get["scheme"]) == (path, 8080, scheme), probe
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    # Lakegate listens where the ports say (the env overrides win over the file).
    host = "[::]" if case == "full" else "0.0.0.0"
    e = env(out)
    assert (e["LAKEGATE__CONTROL__LISTEN"], e["LAKEGATE__S3__LISTEN"], e["LAKEGATE__SQL__LISTEN"]) == (
        f"{host}:8080", f"{host}:9000", f"{host}:5433")
    # The config file the args name is the rendered config.toml.
    m = mounts(out)["/etc/lakegate/config.toml"]
    assert m["subPath"] == "config.toml" and m["readOnly"]
    assert volumes(out)[m["name"]]["configMap"]["name"] == "lakegate-config"


def seconds(duration):
    """Seconds of a humantime duration as the chart writes it ("25s")."""
    assert duration.endswith("s") and duration[:-1].isdigit(), duration
    return int(duration[:-1])


@pytest.mark.parametrize("case", CASES)
def test_kubernetes_waits_for_the_drain_and_the_audit_flush_and_readiness_fails_fast(rendered, case):
    out = rendered[case]
    grace = seconds(tomllib.loads(config_toml(out))["shutdown"]["grace"])
    termination = pod_spec(out)["terminationGracePeriodSeconds"]
    # SIGKILL comes terminationGracePeriodSeconds after SIGTERM: the drain and then the audit flush must fit.
    assert termination >= grace + 5, (termination, grace)
    # A draining pod answers /readyz 503 at once; the probe must notice within seconds, not after the drain.
    readiness = container(out)["readinessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz"
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= 5, readiness
    assert readiness["periodSeconds"] * readiness["failureThreshold"] < grace


def test_the_default_shutdown_timings_are_25s_of_grace_within_30s(rendered):
    assert tomllib.loads(config_toml(rendered["defaults"]))["shutdown"] == {"grace": "25s"}
    assert pod_spec(rendered["defaults"])["terminationGracePeriodSeconds"] == 30


def test_a_termination_grace_period_too_short_for_the_drain_fails_the_render(renderer, tmp_path):
    values = tmp_path / "short.yaml"
    values.write_text("terminationGracePeriodSeconds: 20\nconfig:\n  shutdown:\n    graceSeconds: 25\n")
    with pytest.raises(RenderError, match="terminationGracePeriodSeconds must be at least"):
        render(renderer, [values])
    values.write_text("terminationGracePeriodSeconds: 65\nconfig:\n  shutdown:\n    graceSeconds: 60\n")
    out = render(renderer, [values])
    assert tomllib.loads(config_toml(out))["shutdown"]["grace"] == "60s"
    assert pod_spec(out)["terminationGracePeriodSeconds"] == 65


def test_audit_durability_is_written_to_the_config(renderer, rendered, tmp_path):
    assert tomllib.loads(config_toml(rendered["defaults"]))["audit"]["durability"] == "batch"
    values = tmp_path / "sync.yaml"
    values.write_text("config:\n  audit:\n    durability: sync\n")
    assert tomllib.loads(config_toml(render(renderer, [values])))["audit"]["durability"] == "sync"


@pytest.mark.parametrize("case", CASES)
def test_every_replica_mounts_the_same_key_secrets(rendered, case):
    out = rendered[case]
    dep = the(out, "Deployment")
    # One pod template for all replicas, whose key volumes are fixed Secrets named in values (not per-pod
    # volumes such as emptyDir, which would give each replica keys of its own).
    vols, m = volumes(out), mounts(out)
    for sub, secret in [("credentials", "lakegate-credential-keys"), ("signing", "lakegate-signing-keys")]:
        mount = m[f"{DATA_DIR}/keys/{sub}"]
        assert mount["readOnly"] is True and "subPath" not in mount
        # Inside the writable keys emptyDir, not in a directory the runtime would create as root.
        assert "emptyDir" in vols[m[f"{DATA_DIR}/keys"]["name"]]
        assert vols[mount["name"]] == {"name": mount["name"], "secret": {"secretName": secret, "defaultMode": 0o440}}
    replicas = the(out, "HorizontalPodAutoscaler")["spec"]["minReplicas"] if case == "ha" else dep["spec"]["replicas"]
    assert replicas == {"defaults": 2, "ha": 3, "full": 1}[case]
    # The fsGroup that may read the 0440 key files is the pods' group.
    assert pod_spec(out)["securityContext"]["fsGroup"] == pod_spec(out)["securityContext"]["runAsGroup"]


def test_key_secret_names_come_from_values(renderer, tmp_path):
    values = tmp_path / "keys.yaml"
    values.write_text("keys:\n  credentials:\n    existingSecret: team-a-creds\n"
                      "  signing:\n    existingSecret: team-a-signing\n")
    vols = volumes(render(renderer, [values]))
    assert vols["credential-keys"]["secret"]["secretName"] == "team-a-creds"
    assert vols["signing-keys"]["secret"]["secretName"] == "team-a-signing"


def test_tls_hpa_and_replicas_in_the_ha_render(rendered):
    out = rendered["ha"]
    dep = the(out, "Deployment")
    assert "replicas" not in dep["spec"], "the HPA owns the replica count"
    hpa = the(out, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "lakegate"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]} \
        == {"cpu": 60, "memory": 80}
    assert the(out, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    # TLS: the Secret is mounted and every listener is pointed at it.
    assert volumes(out)["tls"]["secret"]["secretName"] == "lakegate-tls"
    assert mounts(out)["/etc/lakegate/tls"]["readOnly"] is True
    tls = '{ cert = "/etc/lakegate/tls/tls.crt", key = "/etc/lakegate/tls/tls.key" }'
    e = env(out)
    assert [e[f"LAKEGATE__{n}__TLS"] for n in ("CONTROL", "S3", "SQL")] == [tls] * 3
    assert tomllib.loads(f"v = {tls}")["v"] == {"cert": "/etc/lakegate/tls/tls.crt", "key": "/etc/lakegate/tls/tls.key"}
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scheme"] == "https"
    # Spread over zones, with the chart's selector filled in.
    (spread,) = pod_spec(out)["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    for case in ("defaults", "full"):
        assert "tls" not in volumes(rendered[case])
        assert not any(k.endswith("__TLS") for k in env(rendered[case]))


def test_a_client_ca_makes_only_the_s3_listener_require_client_certificates(renderer, tmp_path):
    values = tmp_path / "mtls.yaml"
    values.write_text("tls:\n  enabled: true\n  existingSecret: lakegate-tls\n  clientCASecret: sidecar-ca\n")
    out = render(renderer, [values])
    assert volumes(out)["tls-client-ca"]["secret"]["secretName"] == "sidecar-ca"
    assert mounts(out)["/etc/lakegate/tls-client-ca"]["readOnly"] is True
    e = env(out)
    s3 = tomllib.loads(f"v = {e['LAKEGATE__S3__TLS']}")["v"]
    assert s3 == {"cert": "/etc/lakegate/tls/tls.crt", "key": "/etc/lakegate/tls/tls.key",
                  "client_ca": "/etc/lakegate/tls-client-ca/ca.crt"}
    for listener in ("CONTROL", "SQL"):
        assert "client_ca" not in tomllib.loads(f"v = {e[f'LAKEGATE__{listener}__TLS']}")["v"]


def test_tls_enabled_without_a_secret_fails_the_render(renderer, tmp_path):
    values = tmp_path / "tls.yaml"
    values.write_text("tls:\n  enabled: true\n")
    with pytest.raises(RenderError, match="tls.existingSecret"):
        render(renderer, [values])


def test_selectors_match_the_pods(rendered):
    for case, out in rendered.items():
        dep = the(out, "Deployment")
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        assert the(out, "Service")["spec"]["selector"] == selector
        if case != "full":
            assert the(out, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
            assert the(out, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"] == selector
        assert pod_spec(out)["serviceAccountName"] == the(out, "ServiceAccount")["metadata"]["name"]


def test_service_exposes_the_three_named_ports(rendered):
    svc = the(rendered["defaults"], "Service")
    assert {(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {
        ("control", 8080, "control"), ("s3", 9000, "s3"), ("sql", 5433, "sql")}
    assert svc["spec"]["type"] == "ClusterIP"


def test_network_policy_admits_only_the_three_ports_from_the_configured_peers(rendered):
    np = the(rendered["defaults"], "NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress"]
    rules = {r["ports"][0]["port"]: r for r in np["spec"]["ingress"]}
    assert set(rules) == {8080, 9000, 5433}
    for rule in rules.values():
        assert rule["ports"] == [{"port": rule["ports"][0]["port"], "protocol": "TCP"}]
        assert rule["from"], "a rule without peers would admit everyone"
    # ha: control only from Prometheus in `monitoring`, SQL closed.
    ha = {r["ports"][0]["port"]: r["from"] for r in the(rendered["ha"], "NetworkPolicy")["spec"]["ingress"]}
    assert set(ha) == {8080, 9000}
    assert ha[8080] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]


def test_prometheus_scrape_annotations(rendered):
    annotations = the(rendered["defaults"], "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith("prometheus.io/")} == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics",
        "prometheus.io/scheme": "http"}


def test_persistence_keeps_the_audit_log_of_each_pod_in_its_own_directory_on_the_claim(rendered):
    out = rendered["full"]
    pvc = the(out, "PersistentVolumeClaim")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert pvc["spec"]["storageClassName"] == "fast"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    audit = mounts(out)[AUDIT_DIR]
    assert volumes(out)[audit["name"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    # Lakegate makes the per-pod directory itself (as the pod's user), so no subPath owned by root is involved.
    names = [e["name"] for e in container(out)["env"]]
    assert names.index("POD_NAME") < names.index("LAKEGATE__AUDIT__DIR"), "$(POD_NAME) must be defined first"
    assert env(out)["LAKEGATE__AUDIT__DIR"] == f"{AUDIT_DIR}/$(POD_NAME)"
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container(out)["env"]
    assert container(out)["image"].endswith(
        "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    for case in ("defaults", "ha"):
        assert AUDIT_DIR not in mounts(rendered[case]) and "LAKEGATE__AUDIT__DIR" not in env(rendered[case])


# --- config.toml and policies -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_config_toml_parses_and_uses_only_documented_keys(rendered, case):
    config = tomllib.loads(config_toml(rendered[case]))
    assert config["data_dir"] == DATA_DIR
    assert config["policy"]["dir"] == "/etc/lakegate/policies"
    extra = set(tomllib.loads(rendered[case]["values"]["extraConfig"]))
    for section, allowed in DOCUMENTED.items():
        table = config if section == "" else config[section]
        assert set(table) - extra <= allowed, (section, set(table) - allowed)
    # Listeners are the Deployment's business (environment overrides), not the file's.
    assert "control" not in config
    assert config["audit"]["stdout"] is True and config["audit"]["fail_open"] is False


SPARK_CONNECT_VALUES = """\
sparkConnect:
  enabled: true
  remote: sc://spark-connect.spark.svc:15002
  tokenSecret: spark-connect-token
  namespace: spark
  serverSelector:
    app.kubernetes.io/name: spark-connect
"""


def test_spark_connect_is_configured_with_its_token_and_reachable_only_from_lakegate(renderer, tmp_path):
    values = tmp_path / "spark.yaml"
    values.write_text(SPARK_CONNECT_VALUES)
    out = render(renderer, [values])
    for obj in out["objects"]:
        kubernetes_validate.validate(obj, KUBE_VERSIONS[-1], strict=True)
    config = tomllib.loads(config_toml(out))
    assert config["sql"]["spark"] == [{"name": "spark", "remote": "sc://spark-connect.spark.svc:15002",
                                       "token_file": "/etc/lakegate/spark-connect/token"}]
    assert mounts(out)["/etc/lakegate/spark-connect"]["readOnly"] is True
    assert volumes(out)["spark-connect-token"]["secret"]["secretName"] == "spark-connect-token"
    np = the(out, "NetworkPolicy", "lakegate-spark-connect")
    assert np["metadata"]["namespace"] == "spark"
    assert np["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "spark-connect"}}
    (rule,) = np["spec"]["ingress"]
    assert rule["ports"] == [{"port": 15002, "protocol": "TCP"}]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "lakegate"}}
    assert peer["podSelector"]["matchLabels"] == the(out, "Deployment")["spec"]["selector"]["matchLabels"]
    # Without the token Secret or a remote the render fails rather than start a backend that cannot connect.
    for missing in ("tokenSecret: spark-connect-token", "remote: sc://spark-connect.spark.svc:15002"):
        values.write_text(SPARK_CONNECT_VALUES.replace(missing, missing.split(":")[0] + ': ""'))
        with pytest.raises(RenderError):
            render(renderer, [values])


def render_spark_connect(renderer, values, extra):
    """The chart rendered with SPARK_CONNECT_VALUES plus `extra`, validated; (output, its [[sql.spark]] entry)."""
    values.write_text(SPARK_CONNECT_VALUES + extra)
    out = render(renderer, [values])
    for obj in out["objects"]:
        kubernetes_validate.validate(obj, KUBE_VERSIONS[-1], strict=True)
    (spark,) = tomllib.loads(config_toml(out))["sql"]["spark"]
    return out, spark


def test_spark_connect_over_tls_trusts_the_ca_of_its_secret(renderer, tmp_path):
    values = tmp_path / "spark.yaml"
    out, spark = render_spark_connect(renderer, values, "  tls: true\n  caSecret: spark-connect-ca\n")
    assert (spark["tls"], spark["ca_file"]) == (True, "/etc/lakegate/spark-connect-ca/ca.crt")
    assert mounts(out)["/etc/lakegate/spark-connect-ca"]["readOnly"] is True
    assert volumes(out)["spark-connect-ca"]["secret"]["secretName"] == "spark-connect-ca"
    # TLS with the public roots: no CA volume; a CA without TLS would be ignored, so the render refuses it.
    values.write_text(SPARK_CONNECT_VALUES + "  tls: true\n")
    out = render(renderer, [values])
    assert "ca_file" not in tomllib.loads(config_toml(out))["sql"]["spark"][0]
    assert "spark-connect-ca" not in volumes(out)
    values.write_text(SPARK_CONNECT_VALUES + "  caSecret: spark-connect-ca\n")
    with pytest.raises(RenderError):
        render(renderer, [values])


def test_spark_connect_presents_the_client_certificate_of_its_secret_to_a_proxy_that_asks(renderer, tmp_path):
    values = tmp_path / "spark.yaml"
    out, spark = render_spark_connect(renderer, values, "  tls: true\n  clientCertSecret: lakegate-spark-client\n")
    assert (spark["client_cert"], spark["client_key"]) == (
        "/etc/lakegate/spark-connect-client/tls.crt", "/etc/lakegate/spark-connect-client/tls.key")
    assert mounts(out)["/etc/lakegate/spark-connect-client"]["readOnly"] is True
    assert volumes(out)["spark-connect-client"]["secret"]["secretName"] == "lakegate-spark-client"
    # A client certificate without TLS would never be presented: the render refuses it.
    values.write_text(SPARK_CONNECT_VALUES + "  clientCertSecret: lakegate-spark-client\n")
    with pytest.raises(RenderError):
        render(renderer, [values])


def test_issuers_are_written_with_the_configuration_keys(rendered):
    config = tomllib.loads(config_toml(rendered["ha"]))
    assert config["identity"]["dev_issuer"] is False
    assert config["identity"]["issuers"] == [
        {"issuer": "https://login.example.com/realms/data", "discovery": True, "audiences": ["lakegate"],
         "groups_claim": "realm_access.roles", "attribute_claims": {"region": "region", "department": "department"}},
        {"issuer": "https://kubernetes.default.svc.cluster.local", "jwks_file": "/etc/lakegate/cluster-jwks.json",
         "audiences": ["lakegate"], "algorithms": ["RS256"]},
    ]
    assert "dev_issuer" not in tomllib.loads(config_toml(rendered["defaults"]))["identity"]
    full = tomllib.loads(config_toml(rendered["full"]))
    assert full["s3"]["backend"]["endpoint"] == "https://s3.eu-west-1.amazonaws.com"
    assert full["sts"]["account_id"] == "000000000000"


def test_integers_stay_integers(renderer, tmp_path):
    # YAML numbers reach templates as float64 in Helm; Lakegate's integer keys must not become 1.0e+08.
    values = tmp_path / "big.yaml"
    values.write_text("config:\n  audit:\n    maxFileBytes: 1000000000\n  identity:\n    maxTokenBytes: 65536\n")
    config = tomllib.loads(config_toml(render(renderer, [values])))
    assert config["audit"]["max_file_bytes"] == 1_000_000_000
    assert config["identity"]["max_token_bytes"] == 65536


def test_the_bundled_policies_are_the_demo_set():
    bundled = {p.name: p.read_bytes() for p in (CHART / "files" / "policies").iterdir()}
    demo = {p.name: p.read_bytes() for p in (REPO / "policies").iterdir() if p.is_file()}
    assert bundled == demo, "helm/lakegate/files/policies/ drifted from policies/: copy policies/* over"


def test_policies_configmap_holds_the_policy_files(rendered):
    data = the(rendered["defaults"], "ConfigMap", "lakegate-policies")["data"]
    assert data == {p.name: p.read_text() for p in (CHART / "files" / "policies").iterdir()}
    full = the(rendered["full"], "ConfigMap", "lakegate-policies")["data"]
    assert sorted(full) == ["lakegate.cedarschema", "readme.cedar"]
    mount = mounts(rendered["defaults"])["/etc/lakegate/policies"]
    assert mount["readOnly"] is True
    assert volumes(rendered["defaults"])[mount["name"]]["configMap"]["name"] == "lakegate-policies"


def test_existing_policies_configmap_replaces_the_charts(renderer, tmp_path):
    values = tmp_path / "existing.yaml"
    values.write_text("policies:\n  existingConfigMap: team-policies\n")
    out = render(renderer, [values])
    assert [o["metadata"]["name"] for o in out["objects"] if o["kind"] == "ConfigMap"] == ["lakegate-config"]
    assert volumes(out)["policies"]["configMap"]["name"] == "team-policies"


def test_config_changes_roll_the_pods_and_policy_changes_reload(renderer, rendered, tmp_path):
    def annotations(out):
        return the(out, "Deployment")["spec"]["template"]["metadata"]["annotations"]

    base = annotations(rendered["defaults"])
    assert base["checksum/config"] == hashlib.sha256(config_toml(rendered["defaults"]).encode()).hexdigest()
    changed = tmp_path / "changed.yaml"
    changed.write_text("config:\n  audit:\n    queueCapacity: 8192\n")
    assert annotations(render(renderer, [changed]))["checksum/config"] != base["checksum/config"]
    policies = tmp_path / "policies.yaml"
    policies.write_text("policies:\n  files:\n    s3.cedar: '// nothing'\n")
    assert annotations(render(renderer, [policies])) == base, "policies hot-reload: no restart by default"
    assert "checksum/policies" in annotations(rendered["full"])


def test_notes_tell_where_lakegate_listens_and_which_secrets_it_needs(rendered):
    notes = rendered["defaults"]["notes"]
    assert "http://lakegate.lakegate.svc:8080" in notes and "lakegate.lakegate.svc:5433" in notes
    assert "lakegate-credential-keys" in notes and "lakegate-signing-keys" in notes
    assert "dev token issuer is on" in notes
    assert "dev token issuer is on" not in rendered["ha"]["notes"]
    assert "https://lakegate.lakegate.svc:9000" in rendered["ha"]["notes"]


def test_rendered_config_and_policies_start_a_real_lakegate(rendered, tmp_path):
    """The rendered config.toml and policies, run by the lakegate binary the suite built, with the Deployment's
    audit directory override (persistence) expanded as the kubelet expands $(POD_NAME)."""
    assert BINARY.exists(), f"{BINARY} is missing: scripts/test builds it before pytest"
    out = rendered["defaults"]
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    for name, text in the(out, "ConfigMap", "lakegate-policies")["data"].items():
        (policy_dir / name).write_text(text)
    check = subprocess.run([str(BINARY), "policy", "validate", str(policy_dir)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    audit_env = env(rendered["full"])["LAKEGATE__AUDIT__DIR"]
    audit_dir = tmp_path / audit_env.replace(AUDIT_DIR + "/", "claim/").replace("$(POD_NAME)", "lakegate-7d9f-x2")
    # The pod's paths do not exist here: the data dir comes from --data-dir (the harness), the policy and audit
    # dirs from environment overrides, as the Deployment sets the listeners.
    lg = Lakegate(config=config_toml(out),
                  env={"LAKEGATE__POLICY__DIR": str(policy_dir), "LAKEGATE__AUDIT__DIR": str(audit_dir)})
    try:
        def ready():
            try:
                with urllib.request.urlopen(f"{lg.control_url}/readyz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        eventually("/readyz", ready)
        # A decision with a dev token (the dev issuer is on with the default values) is audited on the "claim".
        request = urllib.request.Request(
            f"{lg.control_url}/v1/authorize", method="POST",
            data=json.dumps({"action": "s3:GetObject", "resource": "s3://lake/sales/q1.parquet"}).encode(),
            headers={"Authorization": f"Bearer {lg.token('alice', ['analysts'], {'region': 'EU'})}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert json.load(r)["decision"] == "allow"
        eventually("an audit file in the per-pod directory", lambda: list(audit_dir.glob("audit-*.jsonl")))
        assert lg.process.poll() is None
    finally:
        lg.stop()


# --- the tests can fail ---------------------------------------------------------------------------------------


@pytest.fixture
def chart_copy(tmp_path):
    copy_dir = tmp_path / "lakegate"
    shutil.copytree(CHART, copy_dir)
    return copy_dir


def test_a_template_syntax_error_fails_the_render(renderer, chart_copy):
    (chart_copy / "templates" / "broken.yaml").write_text("kind: {{ if .Values.replicaCount }}\n")
    with pytest.raises(RenderError, match="broken.yaml"):
        render(renderer, chart=chart_copy)


def test_a_failing_function_fails_the_render(renderer, chart_copy):
    (chart_copy / "templates" / "broken.yaml").write_text('x: {{ required "need .Values.nope" .Values.nope }}\n')
    with pytest.raises(RenderError, match="need .Values.nope"):
        render(renderer, chart=chart_copy)


def test_an_invalid_manifest_fails_kubernetes_validation(rendered):
    dep = copy.deepcopy(the(rendered["defaults"], "Deployment"))
    dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, KUBE_VERSIONS[-1], strict=True)
    dep = copy.deepcopy(the(rendered["defaults"], "Deployment"))
    dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, KUBE_VERSIONS[-1], strict=True)


def test_yamllint_catches_bad_yaml(lint_config):
    with pytest.raises(AssertionError):
        lint("a: 1\na: 2\nb:   [1,2]   \n", lint_config, "bad")


# --- Spark pod template ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kube", ["1.29.0", KUBE_VERSIONS[-1]])
def test_spark_pod_template_validates(kube):
    kubernetes_validate.validate(yaml.safe_load(SPARK_TEMPLATE.read_text()), kube, strict=True)


def test_spark_pod_template_runs_the_sidecar_with_a_projected_token():
    text = SPARK_TEMPLATE.read_text()
    pod = yaml.safe_load(text)
    (sidecar,) = pod["spec"]["initContainers"]
    assert sidecar["restartPolicy"] == "Always", "a native sidecar, so finished Spark pods complete"
    assert sidecar["command"] == ["lakegate-sidecar"], "the slim sidecar binary, not the whole service"
    assert sidecar["args"] == ["--token-file", "/var/run/secrets/tokens/lakegate",
                               "--upstream", "http://lakegate.lakegate.svc:9000", "--listen", "127.0.0.1:9100"]
    assert sidecar["startupProbe"]["tcpSocket"]["port"] == 9100
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "lakegate-token"]
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"] == {"audience": "lakegate", "expirationSeconds": 3600, "path": "lakegate"}
    (mount,) = sidecar["volumeMounts"]
    assert (mount["name"], mount["mountPath"], mount["readOnly"]) == ("lakegate-token", "/var/run/secrets/tokens", True)
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    assert [c["name"] for c in pod["spec"]["containers"]] == ["spark"]
    for setting in ["spark.hadoop.fs.s3a.endpoint=http://127.0.0.1:9100", "spark.hadoop.fs.s3a.path.style.access=true",
                    "spark.hadoop.fs.s3a.aws.credentials.provider="
                    "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"]:
        assert setting in text
