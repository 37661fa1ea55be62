"""The service behind nginx, configured with the example in ``deploy/nginx-hallwatch.conf``
(the README's reverse-proxy snippet): logging in, WHEP signalling and MSE over the
proxied WebSocket all work, and the Origin check still tells the service's own page
from another site's. In front of two instances sharing one PostgreSQL, the same example
spreads a logged-in browser's requests over both without sticky sessions, and the alarm
stream passes through unbuffered."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from tests.app_fixtures import ADMIN_PASSWORD, USER_PASSWORD, RunningApp, free_port, serve_app
from tests.vms.test_alarms import event_stream, site, wait_for_heartbeat
from tests.vms.test_live_ws import receive_mse
from tests.whep_client import WhepClient
from vms.deps import SESSION_COOKIE

ROOT = Path(__file__).resolve().parents[1]
SNIPPET = ROOT / "deploy" / "nginx-hallwatch.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

SITE = """
server:
  trusted_proxies: [127.0.0.1]  # as deploy/nginx-hallwatch.conf asks
webrtc:
  ice_host_addresses: [127.0.0.1]
centres:
  - id: xingning
    name: 兴宁市政务服务中心
    halls: all
halls:
  - id: tax
    name: 国家税务总局兴宁市税务局第一税务分厅办税服务厅
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1?size=320x180&gop=25
"""


VIEWER_ADDRESS = "127.0.0.2"


async def _last_login_source(app: RunningApp, username: str) -> str:
    admin = await app.admin("xingning")
    res = await admin.get("/api/v1/audit", params={"action": "login_success", "user": username})
    assert res.status_code == 200, res.text
    return str(res.json()[0]["source_addr"])


@contextlib.contextmanager
def nginx_in_front_of(upstream_ports: Sequence[int], workdir: Path) -> Iterator[str]:
    """nginx on a free port with the example configuration's upstream listing ``upstream_ports``.

    Its access log (``workdir/logs/access.log``) has one line per request: method, path,
    status and the upstream that answered."""
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed; run scripts/install-test-deps.sh", pytrace=False)
    port = free_port()
    servers = "".join(f"    server 127.0.0.1:{upstream};\n" for upstream in upstream_ports)
    snippet, upstreams = re.subn(
        r"^upstream hallwatch \{\n.*?^\}",
        lambda m: re.sub(r"^    server [^\n]*\n", "", m[0], flags=re.M).replace("}", servers + "}"),
        SNIPPET.read_text(),
        flags=re.M | re.S,
    )
    assert upstreams == 1, "the example no longer has the 'upstream hallwatch' block this test adapts"
    snippet, listens = re.subn(r"listen 80;", f"listen 127.0.0.1:{port};", snippet)
    assert listens == 1, "the example no longer has the 'listen 80;' line this test adapts"
    (workdir / "logs").mkdir()
    (workdir / "hallwatch.conf").write_text(snippet)
    (workdir / "nginx.conf").write_text(
        "worker_processes 1;\n"
        f"pid {workdir}/nginx.pid;\n"
        f"error_log {workdir}/logs/error.log;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        "  log_format upstreams '$request_method $uri $status $upstream_addr';\n"
        f"  access_log {workdir}/logs/access.log upstreams;\n"
        f"  client_body_temp_path {workdir}/body;\n"
        f"  proxy_temp_path {workdir}/proxy;\n"
        f"  include {workdir}/hallwatch.conf;\n"
        "}\n"
    )
    proc = subprocess.Popen(
        [NGINX, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"nginx did not start: {err}", pytrace=False)
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture
async def app() -> AsyncIterator[RunningApp]:
    async with serve_app(SITE) as running:
        await running.wait_online("tax-1")
        yield running


async def test_the_example_nginx_configuration_carries_every_protocol(
    app: RunningApp, tmp_path: Path
) -> None:
    upstream = int(app.base_url.rsplit(":", 1)[1])
    await app.user("xingning", "viewer", username="proxied")
    with nginx_in_front_of([upstream], tmp_path) as proxy:
        # The viewer comes from another loopback address than the proxy's, so the
        # address recorded shows whether the proxy's X-Forwarded-For was believed.
        viewer_side = httpx.AsyncHTTPTransport(local_address=VIEWER_ADDRESS)
        async with httpx.AsyncClient(base_url=f"http://{proxy}", timeout=10, transport=viewer_side) as client:
            login = await client.post(
                "/api/v1/auth/login", json={"username": "proxied", "password": USER_PASSWORD}
            )
            assert login.status_code == 200, login.text
            client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
            assert await _last_login_source(app, "proxied") == VIEWER_ADDRESS
            cameras = (await client.get("/api/v1/cameras")).json()
            assert [c["id"] for c in cameras] == ["tax-1"]

            # WHEP signalling goes through the proxy; the media flows directly over UDP.
            async with WhepClient() as whep:
                await whep.connect_http(client, "/api/v1/cameras/tax-1/whep")
                assert await whep.wait_frames(3, within=10)

            cookie = {"Cookie": f"{SESSION_COOKIE}={client.cookies[SESSION_COOKIE]}"}
            url = f"ws://{proxy}/api/v1/cameras/tax-1/mse.ws"
            async with connect(
                url,
                origin=Origin(f"http://{proxy}"),
                additional_headers=cookie,
                open_timeout=5,
                max_size=None,
            ) as ws:
                capture = await receive_mse(ws, 25)
            assert (capture.init["width"], capture.init["height"]) == (320, 180)
            assert len(capture.decode(tmp_path / "proxied.mp4")) == 25

            # The proxy passes the Host through, so a foreign page is still refused.
            with pytest.raises(InvalidStatus) as refused:
                async with connect(
                    url, origin=Origin("http://evil.example"), additional_headers=cookie, open_timeout=5
                ):
                    pass
            assert refused.value.response.status_code == 403


def _port(app: RunningApp) -> int:
    return int(app.base_url.rsplit(":", 1)[1])


def _answered_by(workdir: Path, path: str) -> list[str]:
    """The upstream address of each request for ``path`` in nginx's access log, in order."""
    lines = (workdir / "logs" / "access.log").read_text().splitlines()
    return [line.split()[3] for line in lines if line.split()[1] == path]


async def _log_in(client: httpx.AsyncClient, username: str, password: str) -> None:
    login = await client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert login.status_code == 200, login.text
    client.headers["X-CSRF-Token"] = login.json()["csrf_token"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_instances_behind_the_example_share_logins_the_cluster_and_alarms(
    database_url: str, tmp_path: Path
) -> None:
    # Two unreachable cameras raise one offline alarm each, whichever instance pulls them.
    shared = site() + (
        f"server:\n  trusted_proxies: [127.0.0.1]\ndatabase:\n  url: {database_url}\n"
        "rtsp_server:\n  enabled: true\n  bind: 127.0.0.1\n  port: 0\n"  # every cluster instance has one
    )
    async with (
        serve_app(shared + "cluster:\n  instance_id: hw-a\n") as a,
        serve_app(shared + "cluster:\n  instance_id: hw-b\n") as b,
    ):
        for app in (a, b):
            app.app.state.alarms.heartbeat = 0.2
        await a.user("xingning", "operator", username="duty")
        with nginx_in_front_of([_port(a), _port(b)], tmp_path) as proxy:
            async with (
                httpx.AsyncClient(base_url=f"http://{proxy}", timeout=10) as duty,
                httpx.AsyncClient(base_url=f"http://{proxy}", timeout=10) as admin,
            ):
                await _log_in(duty, "duty", USER_PASSWORD)
                for _ in range(4):
                    me = await duty.get("/api/v1/auth/me")
                    assert me.status_code == 200 and me.json()["username"] == "duty"
                # Round robin sent the one session cookie to both instances: no stickiness needed.
                assert set(_answered_by(tmp_path, "/api/v1/auth/me")) == {
                    f"127.0.0.1:{_port(a)}",
                    f"127.0.0.1:{_port(b)}",
                }

                await _log_in(admin, "admin-xingning", ADMIN_PASSWORD)
                cluster = (await admin.get("/api/v1/cluster")).json()
                assert cluster["clustered"] is True
                instances = {row["id"]: row for row in cluster["instances"]}
                assert set(instances) == {"hw-a", "hw-b"}
                assert all(row["live"] for row in instances.values())
                owned = sorted(camera for row in instances.values() for camera in row["cameras"])
                assert owned == ["legal-1", "tax-1", "tax-2"]

                async with event_stream(duty, "0") as stream:
                    raised = await stream.take(2)
                    assert {frame.data["camera_id"] for frame in raised} == {"tax-2", "legal-1"}
                    # Heartbeats keep arriving one by one: the stream is open and not buffered.
                    for _ in range(5):
                        await wait_for_heartbeat(stream, timeout=2)
                    assert not stream.ended.is_set()


def test_the_readme_shows_the_tested_configuration() -> None:
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"```nginx\n(.*?)```", readme, re.DOTALL)
    assert shown is not None, "the README has no nginx example"
    tested = "\n".join(line for line in SNIPPET.read_text().splitlines() if not line.startswith("#"))
    assert shown[1].strip() == tested.strip()
