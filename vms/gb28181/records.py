"""RecordInfo: which stretches of a channel are recorded, as a superior asks for them.

A ``<Query><CmdType>RecordInfo</CmdType>`` names the channel, a ``StartTime`` and an
``EndTime`` and the ``Type`` of recording wanted (``all``, ``time``, ``alarm``,
``manual``). Hallwatch records continuously, so every recorded stretch (a span of
:class:`~vms.recordings.RecordingIndex`, gaps between segments under a second
merged) is one ``<Item>`` of type ``time``; an ``alarm`` or ``manual`` query gets
none. The answer is cut into messages of ``batch`` items that all carry the query's
SN and the total ``SumNum``, like the catalog.

Times: GB/T 28181 writes ``YYYY-MM-DDTHH:MM:SS`` without a zone, meaning the local
time of the site. They are read and written in the server's local time zone (set
``TZ``, for example ``Asia/Shanghai``, where the service runs); a time that does
carry a zone or offset is taken as it says. Pure functions; any thread.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from vms.gb28181.channels import Node
from vms.gb28181.manscdp import Command, XmlError, add, document
from vms.gb28181.media import Span

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
RECORDED_TYPES = frozenset({"all", "time"})
"""``Type`` values our continuous recording answers with items."""


@dataclass(frozen=True, slots=True)
class RecordQuery:
    start: datetime
    end: datetime
    kind: str


def gb_time(moment: datetime) -> str:
    """A moment as GB/T 28181 writes it: local time, no zone."""
    return moment.astimezone().strftime(TIME_FORMAT)


def parse_gb_time(text: str) -> datetime:
    """A GB/T 28181 time (local unless it says otherwise), timezone-aware; ValueError if it is none."""
    moment = datetime.fromisoformat(text.strip().replace(" ", "T"))
    return moment.astimezone() if moment.tzinfo is None else moment


def record_query(command: Command) -> RecordQuery:
    """The range and type a RecordInfo query asks for; :class:`XmlError` when unusable."""
    element = command.element
    try:
        start = parse_gb_time(element.findtext("StartTime") or "")
        end = parse_gb_time(element.findtext("EndTime") or "")
    except ValueError:
        raise XmlError("RecordInfo needs a StartTime and an EndTime like 2026-12-07T08:00:00") from None
    if end <= start:
        raise XmlError("the RecordInfo EndTime is not after its StartTime")
    kind = (element.findtext("Type") or "all").strip().lower()
    return RecordQuery(start, end, kind)


def record_info_messages(
    channel: Node, query: RecordQuery, spans: Sequence[Span], sn: int, batch: int
) -> list[ET.Element]:
    """The RecordInfo response, one document per ``batch`` items (at least one, even when empty)."""
    items = list(spans) if query.kind in RECORDED_TYPES else []
    chunks = [items[i : i + batch] for i in range(0, len(items), batch)] or [[]]
    return [_document(channel, sn, len(items), chunk) for chunk in chunks]


def _document(channel: Node, sn: int, total: int, spans: Sequence[Span]) -> ET.Element:
    element = document("Response", "RecordInfo", sn, channel.gb_id)
    add(element, "Name", channel.name)
    add(element, "SumNum", str(total))
    records = ET.SubElement(element, "RecordList", Num=str(len(spans)))
    for start, end in spans:
        item = ET.SubElement(records, "Item")
        for tag, text in (
            ("DeviceID", channel.gb_id),
            ("Name", channel.name),
            ("FilePath", f"{channel.key}/{start.astimezone():%Y%m%dT%H%M%S}"),
            ("Address", channel.address),
            ("StartTime", gb_time(start)),
            ("EndTime", gb_time(end)),
            ("Secrecy", "0"),
            ("Type", "time"),
        ):
            add(item, tag, text)
    return element
