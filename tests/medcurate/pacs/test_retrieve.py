"""Retrieval from a real Orthanc into one claimed raw batch: exact counts, resume after a crash
without duplicates or losses, a failing study reported by its key while the others go through,
corrupt bytes kept for ingest to quarantine, and the cursor held back by a failure."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from medcurate.config import Zones
from medcurate.ingest import pending_batches, run_ingest
from medcurate.pacs.changes import Cursor
from medcurate.pacs.client import PacsClient, PacsError, study_key
from medcurate.pacs.retrieve import (
    pull,
    pull_changes,
    pull_studies,
    read_accessions,
    staging_dir,
)
from medcurate.services import orthanc
from tests.medcurate.pacs.test_changes import wait_stable
from tests.medcurate.pacs.test_client import (
    FaultProxy,
    Study,
    generated,
    proxied,
    proxy,
    store,
)

__all__ = ["generated", "proxy"]


def batch_files(z: Zones, batch: str) -> list[Path]:
    return sorted(p for p in z.raw_batch(batch).rglob("*") if p.is_file())


def sops(files: list[Path]) -> list[str]:
    return sorted(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files)


def expected(studies: list[Study]) -> list[str]:
    return sorted(sop for s in studies for sop in s.sops)


# --- without a server -------------------------------------------------------------------------


def test_read_accessions_csv_or_lines(tmp_path: Path) -> None:
    csv_file = tmp_path / "a.csv"
    csv_file.write_text("PatientAge,AccessionNumber\n40,ACC1\n41,ACC2\n42,\n43,ACC1\n")
    assert read_accessions(csv_file) == ["ACC1", "ACC2"]
    lines = tmp_path / "a.txt"
    lines.write_text("ACC3\n\n ACC4 \n")
    assert read_accessions(lines) == ["ACC3", "ACC4"]
    bad = tmp_path / "bad.txt"
    bad.write_text("ACC5\nDOE^JOHN*\n")
    with pytest.raises(ValueError, match="#2") as e:
        read_accessions(bad)
    assert "DOE" not in str(e.value)


def test_pull_needs_exactly_one_selector(zones_tmp: Zones) -> None:
    c = PacsClient(f"http://127.0.0.1:{orthanc.free_port()}", "u", "p")
    with pytest.raises(ValueError, match="exactly one"):
        pull(zones_tmp, c)
    with pytest.raises(ValueError, match="exactly one"):
        pull(zones_tmp, c, study="1.2.3", since="20200101")


def test_an_invalid_uid_fails_its_study_only(zones_tmp: Zones) -> None:
    c = PacsClient(f"http://127.0.0.1:{orthanc.free_port()}", "u", "p")
    res = pull_studies(zones_tmp, c, ["1.2.3*"])
    assert res.batch is None and res.failed == [study_key("1.2.3*")]
    assert "not a valid" in res.problems[0] and "1.2.3*" not in res.problems[0]


# --- against Orthanc --------------------------------------------------------------------------


@pytest.mark.integration
def test_pull_claims_exactly_the_instances_as_one_batch(
    zones_tmp: Zones, clinical_pacs: orthanc.OrthancServer, generated: list[Study]
) -> None:
    c = PacsClient.from_server(clinical_pacs)
    store(c, generated)
    res = pull_studies(zones_tmp, c, [s.uid for s in generated])
    n = sum(len(s.files) for s in generated)
    assert res.batch is not None and res.failed == [] and res.problems == []
    assert (res.studies_pulled, res.instances, res.fetched) == (len(generated), n, n)
    files = batch_files(zones_tmp, res.batch)
    assert len(files) == n
    assert sops(files) == expected(generated)  # each instance once, none missing
    assert zones_tmp.catalog_pending(res.batch).exists()
    assert pending_batches(zones_tmp) == [res.batch]
    for f in files:  # owner-only, named without identifiers
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert stat.S_IMODE(f.parent.stat().st_mode) == 0o700
        rel = f.relative_to(zones_tmp.raw_batch(res.batch)).as_posix()
        assert not any(s.uid in rel or s.accession in rel for s in generated)
    assert not any(staging_dir(zones_tmp, s.uid).exists() for s in generated)

    ingested = run_ingest(zones_tmp, res.batch)  # the inbox's ingest path, unchanged
    assert (ingested.received, ingested.catalogued, ingested.studies) == (n, n, len(generated))

    again = pull_studies(zones_tmp, c, [generated[0].uid])  # a second pull: a new batch
    assert again.batch not in (None, res.batch) and again.instances == len(generated[0].files)


@pytest.mark.integration
def test_a_run_killed_midway_resumes_without_duplicates_or_losses(
    zones_tmp: Zones, clinical_pacs: orthanc.OrthancServer, generated: list[Study]
) -> None:
    c = PacsClient.from_server(clinical_pacs)
    picked = generated[:2]
    store(c, picked)
    n = sum(len(s.files) for s in picked)

    def crash(_key: str, written: int) -> None:
        if written == 100:
            raise KeyboardInterrupt  # what a killed sensor run looks like from inside

    with pytest.raises(KeyboardInterrupt):
        pull_studies(zones_tmp, c, [s.uid for s in picked], on_instance=crash)
    assert not zones_tmp.raw.exists() or not any(zones_tmp.raw.iterdir())  # nothing claimed

    res = pull_studies(zones_tmp, c, [s.uid for s in picked])
    assert (res.skipped_existing, res.fetched, res.instances) == (100, n - 100, n)
    assert res.batch is not None
    assert sops(batch_files(zones_tmp, res.batch)) == expected(picked)


_KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
from medcurate.config import Zones
from medcurate.pacs.client import PacsClient
from medcurate.pacs.retrieve import pull_studies
url, user, home, k = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = PacsClient(url, user, os.environ["PW"])
def die(_key, written):
    if written == k:
        os.kill(os.getpid(), signal.SIGKILL)
pull_studies(Zones(Path(home)), c, sys.argv[5:], on_instance=die)
"""


@pytest.mark.integration
def test_a_retrieval_killed_by_sigkill_resumes(
    zones_tmp: Zones, clinical_pacs: orthanc.OrthancServer, generated: list[Study]
) -> None:
    c = PacsClient.from_server(clinical_pacs)
    picked = [generated[1]]
    store(c, picked)
    s = clinical_pacs
    argv = [sys.executable, "-c", _KILL_SCRIPT, s.url, s.username, str(zones_tmp.home), "30"]
    env = {**os.environ, "PW": s.password}
    proc = subprocess.run([*argv, picked[0].uid], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]

    res = pull_studies(zones_tmp, c, [picked[0].uid])
    n = len(picked[0].files)
    assert (res.skipped_existing, res.fetched, res.instances) == (30, n - 30, n)
    assert res.batch is not None
    assert sops(batch_files(zones_tmp, res.batch)) == expected(picked)


@pytest.mark.integration
def test_a_failing_study_is_named_by_key_and_holds_the_cursor_back(
    zones_tmp: Zones,
    clinical_pacs: orthanc.OrthancServer,
    generated: list[Study],
    proxy: FaultProxy,
) -> None:
    direct = PacsClient.from_server(clinical_pacs)
    c = proxied(clinical_pacs, proxy)
    cursor = Cursor.load(zones_tmp, c)  # before the studies arrive
    good, bad = generated[0], generated[1]
    store(direct, [good, bad])
    wait_stable(direct, cursor.since, 2)

    proxy.faults.fail_study, proxy.faults.fail_after = bad.uid, 1  # its 2nd series fails
    res = pull_changes(zones_tmp, c)
    assert res.failed == [study_key(bad.uid)]
    assert res.batch is not None and res.studies_pulled == 1
    assert sops(batch_files(zones_tmp, res.batch)) == expected([good])
    assert len(res.problems) == 1
    assert f"({study_key(bad.uid)})" in res.problems[0] and "HTTP 500" in res.problems[0]
    assert not any(s.uid in res.problems[0] for s in generated)
    assert bad.uid not in res.summary_line() and bad.uid not in str(res.metadata())

    left = Cursor.load(zones_tmp, c).read(c)  # the failed study only, from the stored cursor
    assert len(left.changes) == 1
    staged = len(list(staging_dir(zones_tmp, bad.uid).iterdir()))  # its 1st series, kept
    assert 0 < staged < len(bad.files)

    proxy.faults.fail_study = None  # the server recovers: the next tick pulls the rest
    res2 = pull_changes(zones_tmp, c)
    assert res2.failed == [] and res2.batch not in (None, res.batch)
    assert (res2.skipped_existing, res2.instances) == (staged, len(bad.files))
    assert res2.fetched == len(bad.files) - staged
    assert sops(batch_files(zones_tmp, res2.batch)) == expected([bad])
    assert Cursor.load(zones_tmp, c).read(c).changes == []
    assert pull_changes(zones_tmp, c).batch is None  # nothing new: nothing pulled twice


@pytest.mark.integration
def test_a_corrupt_instance_reaches_the_batch_and_ingest_quarantines_it(
    zones_tmp: Zones,
    clinical_pacs: orthanc.OrthancServer,
    generated: list[Study],
    proxy: FaultProxy,
) -> None:
    s = generated[2]
    store(PacsClient.from_server(clinical_pacs), [s])
    proxy.faults.corrupt_sop = sorted(s.sops)[5]
    res = pull_studies(zones_tmp, proxied(clinical_pacs, proxy), [s.uid])
    assert res.batch is not None and res.instances == len(s.files) and res.failed == []
    # series came streamed; only the part pydicom could not name was asked for on its own
    assert proxy.faults.seen.get("instance") == 1
    ingested = run_ingest(zones_tmp, res.batch)
    assert ingested.received == len(s.files)
    assert (ingested.catalogued, ingested.quarantined) == (len(s.files) - 1, 1)
    assert ingested.balanced and sum(ingested.reasons.values()) == 1


@pytest.mark.integration
def test_wrong_password_stops_the_pull(
    zones_tmp: Zones, clinical_pacs: orthanc.OrthancServer, generated: list[Study]
) -> None:
    c = PacsClient(clinical_pacs.url, clinical_pacs.username, "wrong", name="clinical")
    with pytest.raises(PacsError, match="credentials"):
        pull_studies(zones_tmp, c, [generated[0].uid])
    assert not zones_tmp.raw.exists() or not any(zones_tmp.raw.iterdir())


@pytest.mark.integration
def test_pull_by_accessions_study_or_date(
    zones_tmp: Zones,
    clinical_pacs: orthanc.OrthancServer,
    generated: list[Study],
    tmp_path: Path,
) -> None:
    c = PacsClient.from_server(clinical_pacs)
    store(c, generated)
    acc = tmp_path / "acc.csv"
    acc.write_text("AccessionNumber\n" + generated[3].accession + "\nNOSUCHACC\n")
    res = pull(zones_tmp, c, accessions=acc)
    assert res.batch is not None
    assert sops(batch_files(zones_tmp, res.batch)) == expected([generated[3]])

    res = pull(zones_tmp, c, study=generated[2].uid)
    assert res.batch is not None
    assert sops(batch_files(zones_tmp, res.batch)) == expected([generated[2]])

    missing = pull(zones_tmp, c, study="1.2.3.4.5.6.7.8.9")
    assert missing.batch is None and missing.failed == [study_key("1.2.3.4.5.6.7.8.9")]

    latest = max(s.date for s in generated)
    res = pull(zones_tmp, c, since=latest)
    assert res.batch is not None
    assert sops(batch_files(zones_tmp, res.batch)) == expected(
        [s for s in generated if s.date == latest]
    )


def test_pulled_uids_stay_out_of_the_repr() -> None:
    from medcurate.pacs.retrieve import PullResult

    r = PullResult(pulled=["1.2.840.99999.1"])
    assert "1.2.840.99999.1" not in repr(r) and "1.2.840.99999.1" not in r.summary_line()
