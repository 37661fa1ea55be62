"""``GET /api/v1/cluster`` and the ownership metrics, on the real app: with a cluster on
PostgreSQL (a second member joining), and alone on SQLite."""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import SecretStr

from tests.app_fixtures import USER_PASSWORD, prepared
from tests.vms.cluster.helpers import Members, site_config, until
from tests.vms.fault_fixtures import app_on, log_in
from vms.config import Config


def on_postgresql(config: Config, url: str, data_dir: Path) -> Config:
    config = prepared(config, data_dir)
    return config.model_copy(update={"database": config.database.model_copy(update={"url": SecretStr(url)})})


async def add_operator(http: httpx.AsyncClient, duty: httpx.AsyncClient) -> None:
    """Create an operator through the admin's client ``http`` and log ``duty`` in as it."""
    created = await http.post(
        "/api/v1/users", json={"username": "duty", "role": "operator", "password": USER_PASSWORD}
    )
    assert created.status_code == 201, created.text
    await log_in(duty, "duty", USER_PASSWORD)


async def test_the_cluster_route_lists_the_instances_for_admins_only(
    members: Members, tmp_path: Path
) -> None:
    config = on_postgresql(site_config("a", cameras=2), members.url, tmp_path)
    async with app_on(config) as (app, http):
        b = await members.start(site_config("b", cameras=2))
        await until(lambda: len(b.owned()) == 1, "b took its share", within=10)
        await log_in(http)
        answer = await http.get("/api/v1/cluster")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["clustered"] is True and body["lease_timeout"] == 2.0
        rows = {row["id"]: row for row in body["instances"]}
        assert set(rows) == {"a", "b"}
        assert rows["a"]["this"] and not rows["b"]["this"]
        assert rows["a"]["live"] and rows["b"]["live"] and rows["a"]["ready"]
        assert rows["b"]["http_url"] == "http://127.0.0.1:1/b"
        assert 0 <= rows["a"]["heartbeat_age"] < 2.0
        assert sorted(rows["a"]["cameras"] + rows["b"]["cameras"]) == ["cam-00", "cam-01"]
        assert rows["b"]["cameras"] == sorted(b.owned())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as duty:
            await add_operator(http, duty)
            refused = await duty.get("/api/v1/cluster")
        assert refused.status_code == 403
        metrics = (await http.get("/metrics")).text
        assert "hallwatch_cluster_instances 2.0" in metrics
        (mine,) = rows["a"]["cameras"]
        (theirs,) = rows["b"]["cameras"]
        assert f'hallwatch_camera_owned{{camera="{mine}",hall="tax"}} 1.0' in metrics
        assert f'hallwatch_camera_owned{{camera="{theirs}",hall="tax"}} 0.0' in metrics


async def test_alone_the_route_describes_one_instance_owning_every_camera(tmp_path: Path) -> None:
    config = prepared(site_config("a", cameras=2), tmp_path)  # SQLite: the cluster section is idle
    async with app_on(config) as (app, http):
        assert app.state.cluster is None
        await log_in(http)
        body = (await http.get("/api/v1/cluster")).json()
        assert body["clustered"] is False
        (alone,) = body["instances"]
        assert alone["this"] and alone["live"] and alone["cameras"] == ["cam-00", "cam-01"]
        metrics = (await http.get("/metrics")).text
        assert "hallwatch_cluster_instances 1.0" in metrics
        assert 'hallwatch_camera_owned{camera="cam-01",hall="tax"} 1.0' in metrics
