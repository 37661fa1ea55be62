"""The answers to a superior's queries: Catalog, DeviceInfo and DeviceStatus documents.

Each function builds the ``<Response>`` (or, for subscriptions, ``<Notify>``)
elements from a platform's :class:`~vms.gb28181.channels.Directory` and the cameras'
live state (``online(camera_id)``); a catalog is cut into messages of ``batch`` items
that all carry the query's SN and the total ``SumNum``. Pure functions; any thread.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from datetime import datetime

from vms.gb28181.channels import Directory, Node
from vms.gb28181.manscdp import add, document

MANUFACTURER = "Hallwatch"
MODEL = "Hallwatch relay"
FIRMWARE = "0.1.0"

Online = Callable[[str], bool]


def catalog_messages(
    directory: Directory, local_id: str, sn: int, online: Online, batch: int
) -> list[ET.Element]:
    """The Catalog response, one document per ``batch`` items (at least one, even when empty)."""
    items = directory.items()
    chunks = [items[i : i + batch] for i in range(0, len(items), batch)] or [[]]
    return [
        _catalog_document("Response", directory, local_id, sn, len(items), chunk, online) for chunk in chunks
    ]


def catalog_notify(
    directory: Directory, local_id: str, sn: int, nodes: Sequence[Node], event: str, online: Online
) -> ET.Element:
    """A subscription's NOTIFY body: the changed items with their ``Event`` (ON, OFF, ADD, ...)."""
    element = _catalog_document("Notify", directory, local_id, sn, len(nodes), nodes, online)
    for item in element.iter("Item"):
        add(item, "Event", event)
    return element


def _catalog_document(
    root: str, directory: Directory, local_id: str, sn: int, total: int, nodes: Sequence[Node], online: Online
) -> ET.Element:
    element = document(root, "Catalog", sn, local_id)
    add(element, "SumNum", str(total))
    device_list = ET.SubElement(element, "DeviceList", Num=str(len(nodes)))
    for node in nodes:
        _item(ET.SubElement(device_list, "Item"), directory, node, online)
    return element


def _item(item: ET.Element, directory: Directory, node: Node, online: Online) -> None:
    add(item, "DeviceID", node.gb_id)
    add(item, "Name", node.name)
    if node.kind == "group":
        return
    if node.kind == "hall":
        add(item, "ParentID", node.parent_id)
        add(item, "BusinessGroupID", node.parent_id)
        return
    for tag, text in (
        ("Manufacturer", MANUFACTURER),
        ("Model", MODEL),
        ("Owner", "0"),
        ("CivilCode", directory.civil_code),
        ("Address", node.address),
        ("Parental", "0"),
        ("ParentID", node.parent_id),
        ("BusinessGroupID", node.group_id),
        ("SafetyWay", "0"),
        ("RegisterWay", "1"),
        ("Secrecy", "0"),
        ("Status", "ON" if online(node.key) else "OFF"),
    ):
        add(item, tag, text)


def device_info(directory: Directory, local_id: str, target: Node | None, sn: int, name: str) -> ET.Element:
    """DeviceInfo of our platform (``target`` None) or of one channel."""
    element = document("Response", "DeviceInfo", sn, target.gb_id if target else local_id)
    add(element, "DeviceName", target.name if target else name)
    add(element, "Result", "OK")
    add(element, "Manufacturer", MANUFACTURER)
    add(element, "Model", MODEL)
    add(element, "Firmware", FIRMWARE)
    add(element, "Channel", "1" if target else str(len(directory.cameras)))
    return element


def device_status(
    local_id: str, target: Node | None, sn: int, online: bool, recording: bool, now: datetime
) -> ET.Element:
    """DeviceStatus of our platform or of one channel."""
    element = document("Response", "DeviceStatus", sn, target.gb_id if target else local_id)
    add(element, "Result", "OK")
    add(element, "Online", "ONLINE" if online else "OFFLINE")
    add(element, "Status", "OK" if online else "ERROR")
    add(element, "Encode", "ON")
    add(element, "Record", "ON" if recording else "OFF")
    add(element, "DeviceTime", now.strftime("%Y-%m-%dT%H:%M:%S"))
    ET.SubElement(element, "Alarmstatus", Num="0")
    return element
