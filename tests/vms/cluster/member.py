"""One cluster member in its own process, for the tests that kill or freeze it.

``python -m tests.vms.cluster.member CONFIG_FILE DATABASE_URL`` joins the cluster and
prints one JSON line per event on stdout: ``{"started": id}`` once joined, then
``{"camera", "owner", "mine", "epoch"}`` for each change of a camera's owner and
``{"log": message}`` for each warning of the cluster. SIGTERM stops it cleanly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from vms.cluster import Cluster, InstanceInfo
from vms.config_loader import parse_config
from vms.storage import Database


def emit(event: dict[str, object]) -> None:
    print(json.dumps(event), flush=True)


class _Lines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        emit({"log": record.getMessage()})


async def main(config_file: Path, url: str) -> None:
    config = parse_config(await asyncio.to_thread(config_file.read_text, encoding="utf-8"), str(config_file))
    assert config.cluster is not None
    logging.getLogger("vms.cluster").addHandler(_Lines(logging.WARNING))
    db = Database(url)
    await db.start()
    cluster = Cluster(db, config, config.cluster)

    def changed(camera: str, owner: InstanceInfo | None, mine: bool) -> None:
        emit(
            {
                "camera": camera,
                "owner": owner.id if owner else None,
                "mine": mine,
                "epoch": cluster.epoch(camera),
            }
        )

    cluster.on_change(changed)
    await cluster.start()
    emit({"started": cluster.instance.id})
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await cluster.stop()
    await db.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
