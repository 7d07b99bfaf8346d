"""deploy/ (kustomize base, cpu and gpu overlays, the exports-volume component): every overlay
renders with `kubectl kustomize` and validates against the Kubernetes schemas offline
(kubernetes-validate); the probe paths, port, user, metric name and environment in the YAML are
the ones the bento's container and a real `bentoml serve` really have."""

from __future__ import annotations

import math
import re
import shutil
import subprocess

import kubernetes_validate
import pytest
import requests
import yaml

from bench import hostile_images as hi
from bench.pipeline import REPO, Server
from service.settings import NAMES

DEPLOY = REPO / "deploy"
OVERLAYS = ("cpu", "gpu", "gpu-exports-volume")
KUBERNETES_VERSION = "1.32"
KUBECTL = shutil.which("kubectl")
INSTALL = "install kubectl 1.27 or later (kustomize v5 inside), e.g. from https://kubernetes.io/docs/tasks/tools/"


def render(overlay: str) -> dict[str, dict]:
    """The overlay's resources by kind."""
    if KUBECTL is None:
        pytest.fail(f"the deployment tests render deploy/ with `kubectl kustomize`: {INSTALL}")
    done = subprocess.run(
        [KUBECTL, "kustomize", str(DEPLOY / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    by_kind = {doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs), "one resource of each kind"
    return by_kind


def container(resources: dict[str, dict]) -> dict:
    (only,) = resources["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def env(resources: dict[str, dict]) -> dict[str, str]:
    """The container's environment variables with literal values."""
    return {e["name"]: e["value"] for e in container(resources)["env"] if "value" in e}


def env_from(resources: dict[str, dict]) -> dict[str, dict]:
    """The container's environment variables that Kubernetes fills in (valueFrom)."""
    return {e["name"]: e["valueFrom"] for e in container(resources)["env"] if "valueFrom" in e}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_validates_against_the_kubernetes_schemas(overlay):
    resources = render(overlay)
    assert set(resources) == {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    for doc in resources.values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises, naming the field
    labels = resources["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert resources["Service"]["spec"]["selector"] == labels
    assert resources["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels


def test_a_typo_in_a_manifest_is_caught_by_the_validation():
    """The validation above can fail: a misspelt field is refused."""
    hpa = render("cpu")["HorizontalPodAutoscaler"]
    hpa["spec"]["minReplicaz"] = hpa["spec"].pop("minReplicas")
    with pytest.raises(kubernetes_validate.ValidationError, match="minReplicaz"):
        kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)


def test_the_overlays_choose_their_device_and_the_gpu_overlay_asks_for_one():
    cpu, gpu, volume = (render(o) for o in OVERLAYS)
    assert env(cpu)["ATELIER_PROVIDERS"] == "cpu" and "nvidia.com/gpu" not in container(cpu)["resources"]["limits"]
    assert env(gpu)["ATELIER_PROVIDERS"] == "cuda"  # the GPU or refuse to start
    assert container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env(volume)["ATELIER_EXPORTS"].startswith("/exports/")
    mounts = {m["mountPath"]: m for m in container(volume)["volumeMounts"]}
    assert mounts["/exports"]["readOnly"] is True
    for resources in (cpu, gpu, volume):  # every ATELIER_ variable is one the service reads
        assert {k for k in {**env(resources), **env_from(resources)} if k.startswith("ATELIER_")} <= NAMES


def test_the_thread_pools_are_sized_to_the_pods_cpu_request():
    """ONNX Runtime sizes a session's pool to the node's cores; without a CPU limit there is no
    quota the service could read, so each overlay hands it the container's CPU request, in whole cores."""
    for overlay in OVERLAYS:
        resources = render(overlay)
        source = env_from(resources)["ATELIER_CPUS"]["resourceFieldRef"]
        assert source["resource"] == "requests.cpu" and source["divisor"] == "1"
        assert "cpu" in container(resources)["resources"]["requests"]


def test_the_api_keys_come_from_a_secret_the_pod_cannot_start_without():
    for overlay in OVERLAYS:
        source = env_from(render(overlay))["ATELIER_API_KEYS"]["secretKeyRef"]
        assert source["name"] == "atelier-api-keys" and source["key"] == "keys" and not source.get("optional")


def test_termination_leaves_time_for_the_services_drain_and_shutdown():
    resources = render("gpu")
    variables = env(resources)
    grace = resources["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(variables["ATELIER_DRAIN_SECONDS"]) + float(variables["ATELIER_SHUTDOWN_TIMEOUT"])


def test_port_and_user_are_the_bento_containers(bento):
    """The Deployment's containerPort, Prometheus port and user are the ones the bento's
    Dockerfile exposes and runs as."""
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    resources = render("cpu")
    pod = resources["Deployment"]["spec"]["template"]
    port = container(resources)["ports"][0]["containerPort"]
    assert f"EXPOSE {port}" in dockerfile
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    uid = re.search(r"^ARG BENTO_USER_UID=(\d+)", dockerfile, re.MULTILINE)[1]
    assert pod["spec"]["securityContext"]["runAsUser"] == int(uid)
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_probes_and_the_autoscaling_metric_are_what_the_service_serves(server):
    resources = render("gpu")
    probes = [container(resources)[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert set(probes) == {"/readyz", "/livez"}
    for path in probes:
        assert requests.get(f"{server.url}{path}", timeout=10).status_code == 200
    annotations = resources["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    metrics = requests.get(f"{server.url}{annotations['prometheus.io/path']}", timeout=10).text
    (metric,) = resources["HorizontalPodAutoscaler"]["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert re.search(rf"^{name}\{{", metrics, re.MULTILINE), f"{name} is not in /metrics"
    (rule,) = yaml.safe_load((DEPLOY / "prometheus-adapter" / "rules.yaml").read_text())["rules"]["custom"]
    assert rule["seriesQuery"].startswith(name + "{") and rule["name"]["as"] == name


def test_the_service_writes_only_where_the_deployment_mounts_writable_volumes(exports_dir, tmp_path):
    """The root filesystem is read-only in the pod: started with the Deployment's environment (its
    writable paths moved under a temporary folder), a server that answered a stylisation has
    written nothing in its home folder, only under BENTOML_HOME, TMPDIR and XDG_CACHE_HOME. Its
    thread pools are sized to the pod's CPU request (ATELIER_CPUS, as Kubernetes fills it in)."""
    resources = render("cpu")
    variables = env(resources)
    requested = container(resources)["resources"]["requests"]["cpu"]
    variables["ATELIER_CPUS"] = str(math.ceil(float(requested)))  # resourceFieldRef, divisor 1: rounded up
    writable = {name: tmp_path / "writable" / name for name in ("BENTOML_HOME", "TMPDIR", "XDG_CACHE_HOME")}
    for folder in writable.values():
        folder.mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    environment = {
        **variables,
        **{k: str(v) for k, v in writable.items()},
        "HOME": str(home),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    with Server(exports_dir, tmp_path / "serve.log", env=environment) as s:
        r = requests.post(
            f"{s.url}/stylize", files={"content": hi.png(64, 48)}, data={"style_name": "wheat_field"}, timeout=120
        )
        assert r.status_code == 200, r.text
        info = requests.post(f"{s.url}/info", json={}, timeout=10).json()
    assert info["cpus"]["count"] == int(variables["ATELIER_CPUS"]) and info["cpus"]["source"] == "ATELIER_CPUS"
    assert info["stylize_queue"]["slots"] == max(1, int(variables["ATELIER_CPUS"]) // 4)
    assert list(home.iterdir()) == []
    assert any(writable["BENTOML_HOME"].rglob("*.db"))  # the Prometheus files went where they may
