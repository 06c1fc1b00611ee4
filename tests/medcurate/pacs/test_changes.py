"""The change feed and its cursor: a study stored after the cursor was taken comes once, as
StableStudy, and never again from the stored cursor; a failed study holds the cursor back."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from medcurate.config import Zones
from medcurate.pacs.changes import Cursor, Feed, StudyChange, cursor_path, read_changes, study_uid
from medcurate.pacs.client import PacsClient
from medcurate.services import orthanc
from tests.medcurate.pacs.test_client import Study, generated, store

__all__ = ["generated", "wait_stable"]


def wait_stable(client: PacsClient, since: int, n: int, timeout: float = 30.0) -> Feed:
    """Poll the feed until ``n`` StableStudy changes follow ``since`` (StableAge is 1 s here)."""
    deadline = time.monotonic() + timeout
    while True:
        feed = read_changes(client, since)
        if len(feed.changes) >= n or time.monotonic() > deadline:
            return feed
        time.sleep(0.2)


# --- the cursor's arithmetic, without a server -----------------------------------------------


def test_commit_moves_past_handled_studies_only(zones_tmp: Zones) -> None:
    c = Cursor(cursor_path(zones_tmp, "clinical"), since=10)
    feed = Feed([StudyChange(12, "a"), StudyChange(15, "b"), StudyChange(17, "c")], last=20)
    c.commit(feed, {"a", "c"}, zones_tmp)
    assert (c.since, c.done) == (14, {17})  # b (15) failed: since stays below it
    saved = json.loads(c.path.read_text())
    assert saved == {"since": 14, "done": [17]}
    assert stat.S_IMODE(c.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(c.path.parent.stat().st_mode) == 0o700

    again = Feed([StudyChange(15, "b"), StudyChange(17, "c"), StudyChange(21, "d")], last=22)
    c.commit(again, {"b", "c", "d"}, zones_tmp)
    assert (c.since, c.done) == (22, set())


def test_cursor_path_is_under_restricted(zones_tmp: Zones) -> None:
    p = cursor_path(zones_tmp, "clinical")
    assert p == zones_tmp.restricted / "pacs" / "clinical" / "cursor.json"
    with pytest.raises(ValueError):
        cursor_path(zones_tmp, "../x")


# --- against Orthanc --------------------------------------------------------------------------


@pytest.mark.integration
def test_a_study_after_the_cursor_comes_once(
    zones_tmp: Zones, clinical_pacs: orthanc.OrthancServer, generated: list[Study]
) -> None:
    c = PacsClient.from_server(clinical_pacs)
    before, after = generated[0], generated[1]
    store(c, [before])
    wait_stable(c, 0, 1)

    cursor = Cursor.load(zones_tmp, c)  # a first cursor starts now: `before` is not new
    assert cursor.path.exists()
    store(c, [after])
    feed = wait_stable(c, cursor.since, 1)

    feed = cursor.read(c)
    assert len(feed.changes) == 1
    assert [study_uid(c, oid) for oid in feed.study_ids] == [after.uid]
    cursor.commit(feed, set(feed.study_ids), zones_tmp)

    again = Cursor.load(zones_tmp, c)  # from disk
    assert (again.since, again.done) == (cursor.since, cursor.done)
    assert again.read(c).changes == []


@pytest.mark.integration
def test_a_deleted_study_has_no_uid(clinical_pacs: orthanc.OrthancServer) -> None:
    c = PacsClient.from_server(clinical_pacs)
    assert study_uid(c, "00000000-00000000-00000000-00000000-00000000") is None


def test_start_must_be_known(zones_tmp: Zones, tmp_path: Path) -> None:
    c = PacsClient(f"http://127.0.0.1:{orthanc.free_port()}", "u", "p")
    with pytest.raises(ValueError):
        Cursor.load(zones_tmp, c, start="yesterday")
