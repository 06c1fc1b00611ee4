"""Orthanc's change feed, read from a stored cursor: which studies arrived since last time.

Why it looks like this:

- Orthanc numbers every change (``Seq``); a study is complete ``StableAge`` seconds after its last
  instance, when a ``StableStudy`` change fires. Only those are acted on (``NewInstance`` would
  pull half a study).
- The cursor is ``since`` (every change up to it is handled) plus ``done`` (StableStudy changes
  after it that were handled while an earlier one failed). A failed study keeps ``since`` below
  its change, so the next read returns it again, while the studies pulled beside it are not
  pulled twice. The cursor advances only through :meth:`Cursor.commit`, called once a study is
  in a claimed batch.
- It is a small JSON under ``restricted/pacs/<server>/cursor.json`` (0600, atomic writes): the
  PACS's change numbers are not identifying, but its Orthanc ids sit beside identified data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcurate.config import Zones
from medcurate.pacs.client import PacsClient, PacsError
from medcurate.perms import private_dir, write_private_bytes

STABLE_STUDY = "StableStudy"
PAGE = 1000  # changes per request (Orthanc's own limit is 4000)


def cursor_path(zones: Zones, server: str) -> Path:
    """``restricted/pacs/<server>/cursor.json``."""
    if not server or "/" in server or server.startswith("."):
        raise ValueError(f"invalid server name {server!r}")
    return zones.restricted / "pacs" / server / "cursor.json"


@dataclass(frozen=True)
class StudyChange:
    """A StableStudy change: its number and the study's Orthanc id (not its UID)."""

    seq: int
    orthanc_id: str


@dataclass(frozen=True)
class Feed:
    """StableStudy changes after a cursor (not yet handled), and the feed's last number."""

    changes: list[StudyChange]
    last: int

    @property
    def study_ids(self) -> list[str]:
        """Orthanc ids of the studies, each once, in order of first change."""
        return list(dict.fromkeys(c.orthanc_id for c in self.changes))


def last_seq(client: PacsClient) -> int:
    """The number of the newest change on the PACS (0 when it holds nothing)."""
    return int(client.rest("/changes", {"last": ""}, "reading the change feed")["Last"])


def read_changes(client: PacsClient, since: int) -> Feed:
    """Every StableStudy change after ``since``, page by page until Orthanc says Done."""
    changes: list[StudyChange] = []
    last = since
    while True:
        page = client.rest("/changes", {"since": last, "limit": PAGE}, "reading the change feed")
        for c in page.get("Changes", []):
            if c.get("ChangeType") == STABLE_STUDY and c.get("ResourceType") == "Study":
                changes.append(StudyChange(int(c["Seq"]), str(c["ID"])))
        last = max(last, int(page.get("Last", last)))
        if page.get("Done", True) or not page.get("Changes"):
            return Feed(changes, last)


def study_uid(client: PacsClient, orthanc_id: str) -> str | None:
    """The StudyInstanceUID of an Orthanc study id; None when the study is gone (deleted)."""
    try:
        info = client.rest(f"/studies/{orthanc_id}", what="reading a study of the change feed")
    except PacsError as exc:
        if exc.status == 404:
            return None
        raise
    uid = info.get("MainDicomTags", {}).get("StudyInstanceUID")
    return str(uid) if uid else None


def feed_uids(client: PacsClient, feed: Feed) -> dict[str, str | None]:
    """Orthanc id -> StudyInstanceUID of each study of the feed (None: deleted since)."""
    return {oid: study_uid(client, oid) for oid in feed.study_ids}


@dataclass
class Cursor:
    """Where the change feed was read up to (see the module docstring)."""

    path: Path
    since: int = 0
    done: set[int] = field(default_factory=set)

    @classmethod
    def load(cls, zones: Zones, client: PacsClient, start: str = "now") -> Cursor:
        """The stored cursor of ``client``'s server; a first one starts at the newest change
        (``start="now"``: studies already on the PACS are pulled with a query, not the feed) or
        at 0 (``start="all"``), and is saved at once."""
        path = cursor_path(zones, client.name)
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text())
            return cls(path, int(data["since"]), {int(s) for s in data.get("done", [])})
        if start not in ("now", "all"):
            raise ValueError("start is 'now' or 'all'")
        cursor = cls(path, last_seq(client) if start == "now" else 0)
        cursor.save(zones)
        return cursor

    def read(self, client: PacsClient) -> Feed:
        """The StableStudy changes not handled yet."""
        feed = read_changes(client, self.since)
        return Feed([c for c in feed.changes if c.seq not in self.done], feed.last)

    def commit(self, feed: Feed, handled: set[str], zones: Zones | None = None) -> None:
        """Mark the changes of the studies ``handled`` (Orthanc ids, in a claimed batch) done
        and move ``since`` up to the first change still pending; saved at once."""
        pending = [c.seq for c in feed.changes if c.orthanc_id not in handled]
        self.done |= {c.seq for c in feed.changes if c.orthanc_id in handled}
        self.since = max(self.since, min(pending) - 1 if pending else feed.last)
        self.done = {s for s in self.done if s > self.since}
        self.save(zones)

    def save(self, zones: Zones | None = None) -> None:
        """Atomic 0600 write, in a 0700 folder (down from restricted/ when ``zones`` is given)."""
        private_dir(self.path.parent, root=zones.restricted if zones else None)
        body = {"since": self.since, "done": sorted(self.done)}
        write_private_bytes(self.path, (json.dumps(body) + "\n").encode())
