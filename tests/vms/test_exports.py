"""Exports through the whole service: a recorded range of a demo camera (2-second segments)
requested over the API, made in the background, downloaded as a fast-start MP4 that ffprobe
and PyAV accept, with a signed manifest that ``hallwatch verify-export`` accepts and that
fails on one changed byte, one changed field or a foreign key; every role of both centres
on every route; the audit trail; and exports a stop left unfinished."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from tests.app_fixtures import RunningApp, serve_app
from tests.streams.recording.export_checks import assert_fast_start, probe
from vms.audit import AuditLog, AuditQuery
from vms.cli import main
from vms.config_loader import parse_config
from vms.export_signing import KEY_FILE, SigningKey, public_pem
from vms.exports import ExportService
from vms.recordings import RecordingIndex
from vms.storage import Database
from vms.storage.tables import Export

pytestmark = pytest.mark.asyncio(loop_scope="module")

SITE = """
recording:
  record: true
  segment_seconds: 2
exports:
  max_concurrent: 1
centres:
  - id: xingning
    name: 兴宁市政务服务中心
    halls: [tax]
  - id: meizhou
    name: 梅州市政务服务中心
    halls: [land]
halls:
  - id: tax
    name: 税务大厅
  - id: land
    name: 不动产大厅
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1?size=320x180&gop=25
  - id: land-1
    name: 窗口区
    hall: land
    url: demo://land-1?size=320x180&gop=25
    record: false
"""
GOP = 1.0
ROLES = ("viewer", "operator", "admin")


@dataclass
class Site:
    app: RunningApp
    clients: dict[tuple[str, str], httpx.AsyncClient]
    """By (centre, role)."""
    export: dict[str, Any]
    """A ready export of tax-1 made by the xingning operator."""
    requested: tuple[datetime, datetime]


async def _segments(client: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    for _ in range(300):
        listed = (await client.get("/api/v1/cameras/tax-1/recordings")).json()
        if listed["segments"] >= count:
            return list(listed["spans"])
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {count} segments recorded in 30 s")


async def wait_finished(client: httpx.AsyncClient, export_id: str) -> dict[str, Any]:
    for _ in range(300):
        found: dict[str, Any] = (await client.get(f"/api/v1/exports/{export_id}")).json()
        if found["status"] in ("ready", "failed"):
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"export {export_id} not finished in 30 s")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site() -> AsyncIterator[Site]:
    async with serve_app(SITE) as app:
        await app.wait_online("tax-1", "land-1", within=30)
        clients = {
            (c, r): await app.user(c, r) for c in ("xingning", "meizhou") for r in ROLES if r != "admin"
        }
        clients |= {(c, "admin"): await app.admin(c) for c in ("xingning", "meizhou")}
        operator = clients["xingning", "operator"]
        spans = await _segments(operator, 4)
        start = datetime.fromisoformat(spans[0]["start"]) + timedelta(seconds=1.5)
        end = start + timedelta(seconds=4)
        res = await operator.post(
            "/api/v1/exports",
            json={
                "camera_id": "tax-1",
                "start": start.isoformat(),
                "end": end.isoformat(),
                "reason": "来访纠纷",
            },
        )
        assert res.status_code == 202, res.text
        created = res.json()
        assert created["status"] in ("pending", "running") and created["file_url"] is None
        export = await wait_finished(operator, created["id"])
        assert export["status"] == "ready", export
        yield Site(app, clients, export, (start, end))


async def download(site: Site, tmp_path: Path) -> tuple[Path, Path]:
    operator = site.clients["xingning", "operator"]
    res = await operator.get(site.export["file_url"])
    assert res.status_code == 200 and res.headers["content-type"] == "video/mp4"
    assert res.headers["content-disposition"].startswith("attachment;")
    file = tmp_path / "export.mp4"
    file.write_bytes(res.content)
    res = await operator.get(site.export["manifest_url"])
    assert res.status_code == 200 and res.headers["content-type"].startswith("application/json")
    manifest = tmp_path / "export.manifest.json"
    manifest.write_bytes(res.content)
    return file, manifest


async def test_the_export_is_one_fast_start_mp4_of_the_range(site: Site, tmp_path: Path) -> None:
    file, manifest_path = await download(site, tmp_path)
    export, (start, end) = site.export, site.requested
    data = file.read_bytes()
    assert len(data) == export["bytes"] and hashlib.sha256(data).hexdigest() == export["sha256"]
    assert_fast_start(file)
    fmt = (await asyncio.to_thread(probe, file))["format"]
    assert abs(float(fmt["duration"]) - (end - start).total_seconds()) < GOP + 0.1, fmt
    actual_start = datetime.fromisoformat(export["start"])
    assert start - timedelta(seconds=GOP + 0.05) <= actual_start <= start
    with av.open(str(file)) as container:
        frames = sum(1 for packet in container.demux(video=0) for _ in packet.decode())
    assert frames >= 4 * 25

    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert manifest["camera"] == {
        "id": "tax-1",
        "name": "大厅全景",
        "hall": {"id": "tax", "name": "税务大厅"},
    }
    assert manifest["file"]["sha256"] == export["sha256"] and manifest["reason"] == "来访纠纷"
    assert manifest["exported_by"] == {"user": "operator-xingning", "centre": "xingning"}
    assert len(manifest["segments"]) >= 3 and manifest["gaps"] == []
    assert all(s["path"].startswith("tax-1/") for s in manifest["segments"])
    key = (await site.clients["xingning", "operator"].get("/api/v1/exports/signing-key")).json()
    assert manifest["signature"]["key_id"] == key["key_id"] and len(key["key_id"]) == 16
    key_file = site.app.app.state.config.server.data_dir / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600


async def test_verify_export_accepts_it_and_names_what_was_changed(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file, manifest_path = await download(site, tmp_path)
    config = tmp_path / "site.yaml"
    config.write_text(f"server:\n  data_dir: {site.app.app.state.config.server.data_dir}\n", encoding="utf-8")
    key_id = json.loads(manifest_path.read_text(encoding="utf-8"))["signature"]["key_id"]

    assert main(["verify-export", str(file), str(manifest_path), "--config", str(config)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("OK:") and "tax-1" in out[0] and key_id in out[0]

    altered = tmp_path / "altered.mp4"
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    altered.write_bytes(bytes(data))
    assert main(["verify-export", str(altered), str(manifest_path), "--config", str(config)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("FAILED: file hash"), lines

    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps({**manifest, "reason": "另一个原因"}), encoding="utf-8")
    assert main(["verify-export", str(file), str(edited), "--config", str(config)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("FAILED: signature"), lines

    trusted = tmp_path / "trusted.pem"
    trusted.write_text((await site.clients["xingning", "admin"].get("/api/v1/exports/signing-key")).json()[
        "public_key"
    ], encoding="utf-8")  # fmt: skip
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(SigningKey(Ed25519PrivateKey.generate()).sign(manifest)), encoding="utf-8")
    assert main(["verify-export", str(file), str(foreign), "--key", str(trusted)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("FAILED: untrusted key"), lines
    assert main(["verify-export", str(file), str(manifest_path), "--key", str(trusted)]) == 0
    other = tmp_path / "other.pem"
    other.write_text(public_pem(Ed25519PrivateKey.generate().public_key()), encoding="utf-8")
    assert main(["verify-export", str(file), str(manifest_path), "--key", str(other)]) == 1
    assert "FAILED: untrusted key" in capsys.readouterr().out


async def test_every_role_of_both_centres_on_every_route(site: Site) -> None:
    export_id = site.export["id"]
    start, end = site.requested
    body = {"camera_id": "tax-1", "start": start.isoformat(), "end": end.isoformat()}
    routes = [f"/api/v1/exports/{export_id}", f"/api/v1/exports/{export_id}/file",
              f"/api/v1/exports/{export_id}/manifest"]  # fmt: skip
    for (centre, role), client in site.clients.items():
        listed = await client.get("/api/v1/exports")
        key = await client.get("/api/v1/exports/signing-key")
        one = [(await client.get(route)).status_code for route in routes]
        if role == "viewer":
            assert listed.status_code == key.status_code == 403
            assert one == [403] * 3
            assert (await client.post("/api/v1/exports", json=body)).status_code == 403
            continue
        assert listed.status_code == key.status_code == 200
        ids = [e["id"] for e in listed.json()]
        if centre == "xingning":
            assert export_id in ids and one == [200] * 3, (role, one)
            assert all(e["centre_id"] == "xingning" for e in listed.json())
        else:
            assert export_id not in ids and one == [404] * 3, (role, one)
            assert (await client.post("/api/v1/exports", json=body)).status_code == 404
            land = await client.post("/api/v1/exports", json={**body, "camera_id": "land-1"})
            assert land.status_code == 202, land.text
            assert (await client.get("/api/v1/exports")).json()[0]["id"] == land.json()["id"]
    anonymous = await site.app.http.get("/api/v1/exports")
    assert anonymous.status_code == 401


async def test_a_range_with_nothing_recorded_fails_with_a_reason_and_bad_ranges_are_refused(
    site: Site,
) -> None:
    operator = site.clients["xingning", "operator"]
    long_ago = datetime(2026, 1, 1, tzinfo=UTC)
    body = {
        "camera_id": "tax-1",
        "start": long_ago.isoformat(),
        "end": (long_ago + timedelta(minutes=1)).isoformat(),
    }
    res = await operator.post("/api/v1/exports", json=body)
    assert res.status_code == 202
    failed = await wait_finished(operator, res.json()["id"])
    assert failed["status"] == "failed" and "nothing of tax-1" in failed["error"]
    assert (await operator.get(f"/api/v1/exports/{failed['id']}/file")).status_code == 409
    for start, end in [(0, 0.5), (0, 7201), (10, 0)]:
        bad = {**body, "end": (long_ago + timedelta(seconds=end)).isoformat(),
               "start": (long_ago + timedelta(seconds=start)).isoformat()}  # fmt: skip
        assert (await operator.post("/api/v1/exports", json=bad)).status_code == 400, (start, end)
    assert (await operator.post("/api/v1/exports", json={**body, "reason": "x" * 501})).status_code == 422


async def test_creating_and_downloading_are_audited(site: Site) -> None:
    audit: AuditLog = site.app.app.state.audit
    created = await audit.query(AuditQuery(action="export", camera_id="tax-1", username="operator-xingning"))
    first = created[-1]
    detail = json.loads(first.detail or "{}")
    assert detail["export"] == site.export["id"] and detail["reason"] == "来访纠纷"
    assert datetime.fromisoformat(detail["from"]) == site.requested[0]
    assert first.centre_id == "xingning"
    downloads = await audit.query(AuditQuery(action="export_download"))
    assert any(json.loads(r.detail or "{}")["export"] == site.export["id"] for r in downloads)
    assert all(r.bytes == site.export["bytes"] for r in downloads if r.camera_id == "tax-1")


async def test_a_restart_marks_exports_left_unfinished_as_failed(tmp_path: Path) -> None:
    config = parse_config(SITE, "site.yaml").model_copy(
        update={"server": parse_config(SITE, "site.yaml").server.model_copy(update={"data_dir": tmp_path})}
    )
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await db.start()
    try:
        now = datetime.now(UTC)
        async with db.session() as s, s.begin():
            for n, status in enumerate(("pending", "running", "ready")):
                s.add(Export(id=f"e{n}", camera_id="tax-1", stream="main", centre_id="xingning",
                             created_by="op", requested_start_ms=0, requested_end_ms=1000, status=status,
                             created_at=now))  # fmt: skip
        service = ExportService(db, config, RecordingIndex(db, config), AuditLog(db, retention_days=1))
        await service.start()
        await service.stop()
        async with db.session() as s:
            rows = {row.id: row for row in (await s.scalars(select(Export))).all()}
    finally:
        await db.stop()
    assert [rows[i].status for i in ("e0", "e1", "e2")] == ["failed", "failed", "ready"]
    assert "stopped before the export was finished" in (rows["e1"].error or "")
