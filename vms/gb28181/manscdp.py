"""MANSCDP, the XML that GB/T 28181 carries in MESSAGE, SUBSCRIBE and NOTIFY bodies.

:func:`parse_body` reads a query or notification whatever its encoding: the XML
declaration's, else the ``charset`` of the Content-Type, else UTF-8 with GB18030
(a superset of GB2312) as the fall-back; a DOCTYPE is refused (no entity tricks).
:func:`render` writes an element tree in the platform's encoding (GB2312 by default;
a character outside it becomes a character reference, which stays valid XML).
Pure functions; any thread.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

CONTENT_TYPE = "Application/MANSCDP+xml"
_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9_.-]+)[\"'][^>]*\?>", re.I)
_ANY_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
_CODECS = {"gb2312": "gb18030", "gbk": "gb18030", "gb18030": "gb18030", "utf-8": "utf-8", "utf8": "utf-8"}


class XmlError(ValueError):
    """A body that is not usable MANSCDP; the text says why."""


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed MANSCDP document: its root (Query, Notify, Response, Control) and fields."""

    root: str
    cmd_type: str
    sn: int
    device_id: str
    element: ET.Element


def _encoding_of(body: bytes, content_type: str | None) -> str | None:
    declared = _DECLARATION.match(body)
    if declared:
        return declared.group(1).decode("ascii").lower()
    charset = re.search(r"charset\s*=\s*\"?([A-Za-z0-9_.-]+)", content_type or "", re.I)
    return charset.group(1).lower() if charset else None


def decode(body: bytes, content_type: str | None = None) -> str:
    """The body as text, by its declared encoding, else UTF-8, else GB18030."""
    codec = _CODECS.get(_encoding_of(body, content_type) or "", "utf-8")
    for attempt in dict.fromkeys((codec, "utf-8", "gb18030")):
        try:
            return body.decode(attempt)
        except UnicodeDecodeError:
            continue
    raise XmlError("the body is neither UTF-8 nor GB2312/GB18030 text")


def parse_body(body: bytes, content_type: str | None = None) -> Command:
    text = _ANY_DECLARATION.sub("", decode(body, content_type), count=1).strip()
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        raise XmlError("the body has a DOCTYPE, which MANSCDP never uses")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise XmlError(f"the body is not well-formed XML ({err})") from None
    cmd_type = (root.findtext("CmdType") or "").strip()
    if not cmd_type:
        raise XmlError(f"the <{root.tag[:30]}> has no CmdType")
    sn_text = (root.findtext("SN") or "").strip()
    if not sn_text.isdigit() or len(sn_text) > 12:
        raise XmlError("the SN is missing or not a number")
    return Command(
        root=root.tag,
        cmd_type=cmd_type,
        sn=int(sn_text),
        device_id=(root.findtext("DeviceID") or "").strip(),
        element=root,
    )


def document(root: str, cmd_type: str, sn: int, device_id: str) -> ET.Element:
    """A new document with its CmdType, SN and DeviceID."""
    element = ET.Element(root)
    add(element, "CmdType", cmd_type)
    add(element, "SN", str(sn))
    add(element, "DeviceID", device_id)
    return element


def add(parent: ET.Element, tag: str, text: str) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = text
    return child


def render(element: ET.Element, encoding: str) -> bytes:
    """The document with its XML declaration, in ``encoding`` (GB2312 or UTF-8)."""
    ET.indent(element, space="  ")
    text = ET.tostring(element, encoding="unicode")
    head = f'<?xml version="1.0" encoding="{encoding}"?>\n'
    if encoding.upper() == "UTF-8":
        return (head + text + "\n").encode("utf-8")
    return (head + text + "\n").encode("gb2312", errors="xmlcharrefreplace")
