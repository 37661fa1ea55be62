"""What a configuration change means to a subscriber: the catalog compared item by item,
and the NOTIFY bodies that tell it, split as catalog answers are."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from tests.vms.gb28181.test_cascade import LOCAL_ID, site
from vms.config import Config
from vms.gb28181 import queries
from vms.gb28181.catalog_state import changes, snapshot
from vms.gb28181.channels import Directory


def edited(config: Config, *, names: dict[str, str] | None = None, disabled: tuple[str, ...] = ()) -> Config:
    """The configuration with cameras renamed or disabled, as an edited file would give it."""
    cameras = [
        camera.model_copy(
            update={"name": (names or {}).get(camera.id, camera.name), "enabled": camera.id not in disabled}
        )
        for camera in config.cameras
    ]
    return config.model_copy(update={"cameras": cameras})


def directory(config: Config) -> Directory:
    return Directory(config, config.gb28181.platforms[0])


def test_a_renamed_hall_updates_the_hall_and_the_address_of_its_cameras() -> None:
    config = site("udp", 5060, cameras=6)
    halls = [h.model_copy(update={"name": "社保大厅"}) if h.id == "social" else h for h in config.halls]
    renamed = directory(config.model_copy(update={"halls": halls}))
    found = changes(snapshot(directory(config)), renamed)
    assert [node.key for node in found.updated] == ["social", "cam0", "cam3"]
    assert not (found.added or found.deleted or found.disabled or found.enabled)
    assert str(found) == "3 updated"


def test_an_unshared_hall_is_deleted_after_its_cameras_and_nothing_else_changes() -> None:
    config = site("udp", 5060, cameras=6)
    fewer = site("udp", 5060, cameras=6, extra="      halls: [tax]\n")
    before, after = directory(config), directory(fewer)
    found = changes(snapshot(before), after)
    social = [node for node in before.items() if node.key in ("social", "cam0", "cam3")]
    assert found.deleted == [social[1].gb_id, social[2].gb_id, social[0].gb_id]
    assert not found.updated and not found.added
    assert not changes(snapshot(after), after)


def test_disabling_a_camera_keeps_it_listed() -> None:
    config = site("udp", 5060, cameras=6)
    found = changes(snapshot(directory(config)), directory(edited(config, disabled=("cam1",))))
    assert [node.key for node in found.disabled] == ["cam1"]
    assert not (found.deleted or found.added or found.updated or found.enabled)


def test_large_notifications_are_split_with_the_total_in_each() -> None:
    shared = directory(site("udp", 5060, cameras=12))
    ids = [node.gb_id for node in shared.cameras]
    added = queries.catalog_notifies(shared, LOCAL_ID, 4, shared.cameras, "ADD", lambda key: True, 3)
    deleted = queries.deletion_notifies(LOCAL_ID, 4, ids, 3)
    for bodies in (added, deleted):
        texts = [ET.tostring(body, encoding="unicode") for body in bodies]
        assert [re.search(r'Num="(\d+)"', t).group(1) for t in texts] == ["3", "3", "2"]  # type: ignore[union-attr]
        assert all("<SumNum>8</SumNum>" in t and "<SN>4</SN>" in t for t in texts)
        assert [i for t in texts for i in re.findall(r"<Item><DeviceID>(\d{20})</DeviceID>", t)] == ids
    assert all(body.find("CmdType").text == "Catalog" for body in added)  # type: ignore[union-attr]
    assert "<Event>DEL</Event>" in ET.tostring(deleted[0], encoding="unicode")
