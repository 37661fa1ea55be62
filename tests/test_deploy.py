"""The deployment files, read as a container engine would read them (none runs here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from vms.cluster.config_hash import differing, section_hashes
from vms.config import Config
from vms.config_loader import load_config

ROOT = Path(__file__).parents[1]
SHARED_MOUNT = Path("/srv/hallwatch")
"""Where the cluster's instances mount the recordings they share."""


def test_compose_runs_the_service_with_health_check_volume_and_camera() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    service = compose["services"]["hallwatch"]
    assert "/healthz" in " ".join(service["healthcheck"]["test"])
    volumes = service["volumes"]
    assert any(v.split(":")[0] in compose["volumes"] for v in volumes), "a named data volume"
    config_mount = next(v for v in volumes if v.endswith("/etc/hallwatch/config.yaml:ro"))
    assert (ROOT / config_mount.split(":")[0]).is_file()
    assert service["environment"]["HALLWATCH_CONFIG"] == "/etc/hallwatch/config.yaml"
    camera = compose["services"]["camera-sim"]
    dockerfile = ROOT / camera["build"]["dockerfile"]
    assert dockerfile.is_file()
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        if line.startswith("COPY "):
            assert (ROOT / line.split()[1]).exists(), line


def test_compose_config_is_valid_and_points_at_the_simulated_cameras() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    paths = {
        arg.split("=", 1)[1].split(":")[0]
        for arg in compose["services"]["camera-sim"]["command"]
        if arg.startswith("--stream=")
    }
    config = load_config(ROOT / "deploy" / "compose-config.yaml")
    assert config.server.data_dir == Path("/var/lib/hallwatch")
    assert {cam.url.rsplit("/", 1)[1] for cam in config.cameras} == paths


def test_dockerfile_copies_what_exists_and_checks_health() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for match in re.finditer(r"^COPY (.+) \S+$", text, re.MULTILINE):
        for src in match.group(1).split():
            assert (ROOT / src).exists(), src
    assert "/healthz" in text
    assert 'VOLUME ["/var/lib/hallwatch"]' in text


def _cluster() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The compose file and its services of the ``cluster`` profile."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    profiled = {name: s for name, s in compose["services"].items() if "cluster" in s.get("profiles", [])}
    return compose, profiled


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's volumes as target → source."""
    return {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}


def _instances() -> dict[str, tuple[dict[str, Any], Config]]:
    """The cluster's Hallwatch services, each with the configuration it mounts."""
    compose, profiled = _cluster()
    found = {}
    for name, service in profiled.items():
        if service.get("image") == compose["services"]["hallwatch"]["image"]:
            found[name] = (service, load_config(ROOT / _mounts(service)["/etc/hallwatch/config.yaml"]))
    return found


def test_the_cluster_profile_runs_postgresql_three_instances_and_nginx() -> None:
    compose, profiled = _cluster()
    single = compose["services"]["hallwatch"]
    assert "profiles" not in single, "plain 'docker compose up' still runs the single instance"
    instances = _instances()
    assert set(profiled) == {"postgres", "nginx", *instances} and len(instances) == 3
    postgres = profiled["postgres"]
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert _mounts(postgres)["/var/lib/postgresql/data"] in compose["volumes"]
    for name, (service, _) in instances.items():
        assert service["build"] == single["build"], name
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name
        for dependency in service["depends_on"]:
            assert dependency in compose["services"], (name, dependency)
    assert set(profiled["nginx"]["depends_on"]) == set(instances)
    conf = _mounts(profiled["nginx"])["/etc/nginx/conf.d/default.conf"]
    assert (ROOT / conf).resolve() == ROOT / "deploy" / "nginx-hallwatch.conf"


def test_each_instance_has_its_own_identity_and_data_and_shares_the_rest() -> None:
    compose, profiled = _cluster()
    instances = _instances()
    configs = [config for _, config in instances.values()]
    clusters = [config.cluster for config in configs]
    assert all(c is not None for c in clusters)
    ids = {c.instance_id for c in clusters if c is not None}
    http = {c.http_url for c in clusters if c is not None}
    rtsp = {c.rtsp_url for c in clusters if c is not None}
    assert len(ids) == len(http) == len(rtsp) == 3
    # The instances would refuse to start beside each other if this differed.
    hashes = [section_hashes(config) for config in configs]
    assert all(h == hashes[0] for h in hashes), [differing(hashes[0], h) for h in hashes]
    env = profiled["postgres"]["environment"]
    expected = f"postgresql+asyncpg://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@127.0.0.1:5432/{env['POSTGRES_DB']}"
    data_volumes = set()
    shared_volumes = set()
    for name, (service, config) in instances.items():
        assert config.database.url is not None and config.database.url.get_secret_value() == expected, name
        assert config.rtsp_server.enabled, f"{name}: the others pull its cameras from its RTSP re-serve"
        cluster = config.cluster
        assert cluster is not None
        assert cluster.http_url == f"http://127.0.0.1:{config.server.port}", name
        assert cluster.rtsp_url == f"rtsp://127.0.0.1:{config.rtsp_server.port}", name
        assert f"127.0.0.1:{config.server.port}/healthz" in " ".join(service["healthcheck"]["test"]), name
        mounts = _mounts(service)
        data_volumes.add(mounts[str(config.server.data_dir)])
        shared_volumes.add(mounts[str(SHARED_MOUNT)])
        for directory in (config.recording.directory, config.exports.directory):
            assert directory is not None and directory.is_relative_to(SHARED_MOUNT), name
    assert len(data_volumes) == 3 and data_volumes <= compose["volumes"].keys()
    assert len(shared_volumes) == 1 and shared_volumes <= compose["volumes"].keys()
    # A new volume takes its owner from the image: the service user must own the mount point.
    made = re.search(r"mkdir -p ([^&]*)&& chown hallwatch ([^\n]*)", (ROOT / "Dockerfile").read_text())
    assert made is not None and str(SHARED_MOUNT) in made[1].split() and str(SHARED_MOUNT) in made[2].split()


def test_nginx_sends_to_every_instance_and_nothing_else() -> None:
    conf = (ROOT / "deploy" / "nginx-hallwatch.conf").read_text(encoding="utf-8")
    upstream = re.search(r"upstream hallwatch \{(.*?)\}", conf, re.DOTALL)
    assert upstream is not None
    servers = re.findall(r"^\s*server (\S+);", upstream[1], re.MULTILINE)
    ports = [f"127.0.0.1:{config.server.port}" for _, config in _instances().values()]
    assert sorted(servers) == sorted(ports)
    assert "ip_hash" not in upstream[1] and "sticky" not in upstream[1], "sessions are in the database"
