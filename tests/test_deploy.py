"""The deployment files hold together: images pinned, ports and secrets where they should be, the
start order, and the names one file gives another (ports, paths, search attributes, metrics).

`make validate-deploy` runs the tools (docker-compose config, kubernetes-validate); these read
the files as data and check what the tools cannot know.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from workflows import search_attributes

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE = ROOT / "docker-compose.yml"
OVERLAYS = sorted(ROOT.glob("docker-compose.*.yml"))
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# `${NAME:-default}` and `${NAME:?message}`, as Compose interpolates them.
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::(?P<op>[-?])(?P<rest>[^}]*))?\}")
# A tag that names a release: 16.10, v3.10.0, 1.31.2, 3.11.13-slim-bookworm.
VERSION_TAG = re.compile(r"^v?\d+\.\d+(\.\d+)?(-[a-z0-9.-]+)?$")
SECRET_NAME = re.compile(r"(KEYS?|PASSWORD|PWD|SECRET)(__FILE)?$")
# `id=path` pairs: which files hold the keys.
KEY_FILES = re.compile(r"^[^=,]+=/[^=,]+(,[^=,]+=/[^=,]+)*$")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def services(path: Path) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = load(path)["services"]
    return found


def with_defaults(value: str) -> str:
    """The value as Compose resolves it when no variable is set: each default in place."""
    return INTERPOLATION.sub(lambda m: m["rest"] if m["op"] == "-" else "", value)


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(KUBERNETES.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            for document in yaml.safe_load_all(path.read_text()):
                yield path, document


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for _, manifest in manifests():
        if manifest["kind"] in {"Deployment", "Job"}:
            yield manifest["metadata"]["name"], manifest["spec"]["template"]["spec"]


def test_every_image_is_pinned_to_a_release() -> None:
    images = [
        with_defaults(service["image"])
        for path in [COMPOSE, *OVERLAYS]
        for service in services(path).values()
        if "image" in service
    ]
    images += [container["image"] for _, spec in pod_specs() for container in spec["containers"]]
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert base is not None
    images.append(base[1])
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and VERSION_TAG.match(tag), f"{image} is not pinned to a release"
        if name == "paysaga":
            assert tag == VERSION, f"{image}: paysaga's image is named for pyproject's {VERSION}"


def test_only_the_api_and_the_uis_publish_ports_on_loopback_by_default() -> None:
    """The API and the Temporal UI; Grafana under `observability`; the sandbox's buyer pages in
    the staging overlay. Each on 127.0.0.1 unless its *_BIND says otherwise."""
    published = {
        (path.name, name): service["ports"]
        for path in [COMPOSE, *OVERLAYS]
        for name, service in services(path).items()
        if "ports" in service
    }
    assert set(published) == {
        ("docker-compose.yml", "api"),
        ("docker-compose.yml", "temporal-ui"),
        ("docker-compose.yml", "grafana"),
        ("docker-compose.sandbox.yml", "sandbox"),
    }
    assert services(COMPOSE)["grafana"]["profiles"] == ["observability"]
    for ports in published.values():
        for port in ports:
            assert with_defaults(port).startswith("127.0.0.1:"), f"{port} is open to all"


def test_compose_holds_no_secret_value() -> None:
    for path in [COMPOSE, *OVERLAYS]:
        for name, service in services(path).items():
            environment = service.get("environment", {})
            for key, value in environment.items():
                if SECRET_NAME.search(key):
                    assert "${" in value or value.startswith("/run/secrets/"), (
                        f"{path.name}: {name}.{key} holds a value instead of naming one"
                    )
            url = environment.get("PAYSAGA_DATABASE_URL")
            if url is not None:
                assert re.match(r"^postgresql\+psycopg://paysaga:\$\{PAYSAGA_DB_PASSWORD[:}]", url)


def test_every_secret_file_a_service_names_is_mounted_in_it() -> None:
    for path in [COMPOSE, *OVERLAYS]:
        declared = set(load(path).get("secrets", {}))
        for name, service in services(path).items():
            mounted = set(service.get("secrets", []))
            assert mounted <= declared | set(load(COMPOSE)["secrets"])
            named = {
                secret
                for value in service.get("environment", {}).values()
                for secret in re.findall(r"/run/secrets/([a-z0-9_]+)", str(value))
            }
            assert named <= mounted, f"{path.name}: {name} names {named - mounted}, not mounted"


def test_compose_starts_things_in_order() -> None:
    def waits_for(service: str) -> dict[str, str]:
        conditions = services(COMPOSE)[service]["depends_on"]
        return {name: c["condition"] for name, c in conditions.items()}

    done, healthy = "service_completed_successfully", "service_healthy"
    assert waits_for("temporal-schema") == {"postgres": healthy}
    assert waits_for("temporal") == {"temporal-schema": done}
    assert waits_for("temporal-namespace") == {"temporal": healthy}
    assert waits_for("migrate") == {"postgres": healthy}
    for process in ("api", "worker"):
        assert waits_for(process) == {"migrate": done, "temporal-namespace": done}


def test_compose_registers_paysagas_search_attributes() -> None:
    script = (DEPLOY / "temporal" / "setup-namespace.sh").read_text().replace("\\\n", " ")
    registered = {
        name: kind
        for command in script.splitlines()
        if "search-attribute create" in command
        for kind in re.findall(r"--type (\w+)", command)
        for name in re.findall(r"--name (\w+)", command)
    }
    assert registered == {
        key.name: key.indexed_value_type.name.capitalize() for key in search_attributes.ALL
    }


def test_prometheus_scrapes_the_ports_paysaga_serves_on() -> None:
    environment = services(COMPOSE)["api"]["environment"]
    jobs = {
        job["job_name"]: job["dns_sd_configs"][0]
        for job in load(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]
        if "dns_sd_configs" in job
    }
    assert jobs["paysaga-api"]["names"] == ["api"]
    assert str(jobs["paysaga-api"]["port"]) == environment["PAYSAGA_API_PORT"]
    assert jobs["paysaga-worker"]["names"] == ["worker"]
    metrics_port = environment["PAYSAGA_WORKER_METRICS_ADDRESS"].rpartition(":")[2]
    assert str(jobs["paysaga-worker"]["port"]) == metrics_port


def test_the_dashboard_is_provisioned_where_compose_mounts_it() -> None:
    provider = load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "paysaga.yml")
    mounts = services(COMPOSE)["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in mounts
    datasource = load(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "paysaga.json").read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_kustomization_lists_every_base_manifest() -> None:
    listed = load(KUBERNETES / "kustomization.yaml")["resources"]
    present = sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present


def test_kubernetes_holds_no_secret_only_references() -> None:
    kinds = {manifest["kind"] for _, manifest in manifests()}
    assert "Secret" not in kinds
    for _, manifest in manifests():
        if manifest["kind"] == "ConfigMap":
            for key, value in manifest["data"].items():
                if SECRET_NAME.search(key):
                    assert KEY_FILES.match(value), f"{key} holds keys, not where they are"
    for name, spec in pod_specs():
        for container in spec["containers"]:
            for variable in container.get("env", []):
                if SECRET_NAME.search(variable["name"]) or variable["name"].endswith("_URL"):
                    assert "secretKeyRef" in variable.get("valueFrom", {}), (name, variable)


@pytest.mark.parametrize(
    "name", ["paysaga-api", "paysaga-worker", "paysaga-db-upgrade", "paysaga-temporal-setup"]
)
def test_every_key_file_the_settings_name_is_mounted(name: str) -> None:
    spec = dict(pod_specs())[name]
    mounted = [mount["mountPath"] for mount in spec["containers"][0]["volumeMounts"]]
    for _, manifest in manifests():
        if manifest["kind"] != "ConfigMap":
            continue
        for key, value in manifest["data"].items():
            paths = [pair.partition("=")[2] for pair in value.split(",")]
            if key.endswith("_FILE"):
                paths = [value]
            elif not key.endswith("_KEYS"):
                continue
            for path in paths:
                assert any(path.startswith(f"{m}/") for m in mounted), f"{key}: {path}"


def test_pods_run_unprivileged_and_read_only() -> None:
    for name, spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert "memory" in container["resources"]["limits"], name


def test_probes_and_scrapes_name_the_ports_the_containers_serve() -> None:
    settings = next(
        m["data"] for _, m in manifests() if m["metadata"]["name"] == "paysaga-settings"
    )
    served = {
        "paysaga-api": settings["PAYSAGA_API_PORT"],
        "paysaga-worker": settings["PAYSAGA_WORKER_METRICS_ADDRESS"].rpartition(":")[2],
    }
    for _, manifest in manifests():
        if manifest["kind"] != "Deployment":
            continue
        template = manifest["spec"]["template"]
        (container,) = template["spec"]["containers"]
        (port,) = container["ports"]
        name = manifest["metadata"]["name"]
        assert str(port["containerPort"]) == served[name]
        assert template["metadata"]["annotations"]["prometheus.io/port"] == served[name]
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] == port["name"]


def test_the_image_is_built_from_an_allowlist() -> None:
    patterns = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    allowed = {p.removeprefix("!") for p in patterns if p.startswith("!")}
    assert not allowed & {".paysaga", ".venv", "deploy", "tests", ".git"}
    assert re.search(r"^USER 10001:10001$", (ROOT / "Dockerfile").read_text(), re.M)
