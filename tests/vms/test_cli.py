"""The command line: ``hallwatch check-config`` and a refusal to serve a bad file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BAD = """\
halls:
  - id: tax
    name: 税务
cameras:
  - id: tax-1
    name: 大厅
    hall: tax
    url: rtsp://cam.example/stream
    enabeld: true
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vms", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_check_config_accepts_the_example() -> None:
    result = run("check-config", str(Path(__file__).parents[2] / "examples" / "site.yaml"))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_check_config_names_file_line_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(BAD, encoding="utf-8")
    result = run("check-config", str(path))
    assert result.returncode == 2
    assert f"{path}:9:5: cameras[0]: unknown key 'enabeld'; did you mean 'enabled'?" in result.stderr


def test_serve_refuses_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(BAD, encoding="utf-8")
    result = run("serve", "--config", str(path), "--port", "0")
    assert result.returncode == 2
    assert "unknown key 'enabeld'" in result.stderr
    assert "refusing to start" in result.stderr
