"""The answers to a superior's queries: Catalog, DeviceInfo and DeviceStatus documents.

Each function builds the ``<Response>`` (or, for subscriptions, ``<Notify>``)
elements from a platform's :class:`~vms.gb28181.channels.Directory` and the cameras'
live state (``online(camera_id)``); a catalog (or a subscription's notification) is cut
into messages of ``batch`` items that all carry the query's SN and the total ``SumNum``.
Pure functions; any thread.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from vms.gb28181.channels import Directory, Node
from vms.gb28181.manscdp import add, document

MANUFACTURER = "Hallwatch"
MODEL = "Hallwatch relay"
FIRMWARE = "0.1.0"

Online = Callable[[str], bool]
_T = TypeVar("_T")


def catalog_messages(
    directory: Directory, local_id: str, sn: int, online: Online, batch: int
) -> list[ET.Element]:
    """The Catalog response, one document per ``batch`` items (at least one, even when empty)."""
    items = directory.items()
    return [
        _catalog_document("Response", directory, local_id, sn, len(items), chunk, online)
        for chunk in _chunks(items, batch)
    ]


def catalog_notifies(
    directory: Directory,
    local_id: str,
    sn: int,
    nodes: Sequence[Node],
    event: str,
    online: Online,
    batch: int,
) -> list[ET.Element]:
    """A subscription's NOTIFY bodies: the items of ``nodes`` with their ``Event`` (ON, OFF,
    ADD, UPDATE), ``batch`` items a document, each with the total ``SumNum``."""
    documents = [
        _catalog_document("Notify", directory, local_id, sn, len(nodes), chunk, online)
        for chunk in _chunks(nodes, batch)
    ]
    for element in documents:
        for item in element.iter("Item"):
            add(item, "Event", event)
    return documents


def deletion_notifies(local_id: str, sn: int, gb_ids: Sequence[str], batch: int) -> list[ET.Element]:
    """NOTIFY bodies of DEL events: items of a DeviceID and the Event only (the channel is gone)."""
    documents = []
    for chunk in _chunks(gb_ids, batch):
        element, device_list = _list_document("Notify", local_id, sn, len(gb_ids), len(chunk))
        for gb_id in chunk:
            item = ET.SubElement(device_list, "Item")
            add(item, "DeviceID", gb_id)
            add(item, "Event", "DEL")
        documents.append(element)
    return documents


def _chunks(items: Sequence[_T], batch: int) -> list[Sequence[_T]]:
    return [items[i : i + batch] for i in range(0, len(items), batch)] or [[]]


def _list_document(
    root: str, local_id: str, sn: int, total: int, count: int
) -> tuple[ET.Element, ET.Element]:
    element = document(root, "Catalog", sn, local_id)
    add(element, "SumNum", str(total))
    return element, ET.SubElement(element, "DeviceList", Num=str(count))


def _catalog_document(
    root: str, directory: Directory, local_id: str, sn: int, total: int, nodes: Sequence[Node], online: Online
) -> ET.Element:
    element, device_list = _list_document(root, local_id, sn, total, len(nodes))
    for node in nodes:
        item = ET.SubElement(device_list, "Item")
        for tag, text in item_fields(directory, node):
            add(item, tag, text)
        if node.kind == "camera":
            add(item, "Status", "ON" if online(node.key) else "OFF")
    return element


def item_fields(directory: Directory, node: Node) -> list[tuple[str, str]]:
    """A catalog item's fields but its live ``Status``: what only the configuration changes."""
    fields = [("DeviceID", node.gb_id), ("Name", node.name)]
    if node.kind == "hall":
        fields += [("ParentID", node.parent_id), ("BusinessGroupID", node.parent_id)]
    elif node.kind == "camera":
        fields += [
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
        ]
    return fields


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
