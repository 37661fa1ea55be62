"""The superior platforms' registration as the service shows it: the status bar's figures
(admins of the platform's centre only), the admin route and the metrics, on the real app
registered with a superior on 127.0.0.1."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.app_fixtures import serve_app
from tests.vms.gb28181.superior import Superior
from tests.vms.gb28181.test_cascade import site


async def test_admins_of_the_platforms_centre_see_its_registration() -> None:
    superior = Superior("udp")
    await superior.start()
    try:
        async with serve_app(site("udp", superior.port, cameras=2)) as app:
            admin = await app.admin("meizhou")

            async def platforms() -> list[dict[str, Any]]:
                res = await admin.get("/api/v1/status")
                assert res.status_code == 200
                found: list[dict[str, Any]] = res.json()["platforms"]
                return found

            async with asyncio.timeout(10):
                while not (found := await platforms()) or not found[0]["registered"]:
                    await asyncio.sleep(0.1)
            assert [p["name"] for p in found] == ["meizhou"] and found[0]["since"]
            other_admin = await app.admin("xingning")
            operator = await app.user("meizhou", "operator")
            for client in (other_admin, operator):
                assert (await client.get("/api/v1/status")).json()["platforms"] == []
            route = (await admin.get("/api/v1/gb28181/platforms")).json()
            assert route[0]["registered"] is True and route[0]["registrations"] >= 1
            metrics = (await app.http.get("/metrics")).text
            assert 'hallwatch_gb28181_registered{platform="meizhou"} 1.0' in metrics

    finally:
        await superior.stop()
