"""The deployment files, read as a container engine would read them (none runs here)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from vms.config_loader import load_config

ROOT = Path(__file__).parents[1]


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
