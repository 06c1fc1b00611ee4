"""The DICOMweb client of the (clinical) PACS: QIDO-RS searches, WADO-RS retrieval, errors.

Why it looks like this:

- dicomweb-client does the QIDO-RS searches over a ``requests`` session that carries basic auth
  and (connect, read) timeouts. Its own retries are off: a retrieval resumes instance by instance
  (:mod:`medcurate.pacs.retrieve`), so a retry here would only hide a failing server.
- Orthanc 1.10 does not decode %-escaped query values and dicomweb-client escapes ``*`` and
  ``^``: only exact values are queried (date ranges ``YYYYMMDD-YYYYMMDD``, UIDs, accession
  numbers, modalities), which pass through the escaping unchanged (:func:`check_exact`).
- Instances come as the bytes the server sent (never parsed here): a series in one streamed
  WADO-RS answer decoded part by part (:meth:`PacsClient.iter_series`, one instance in memory at
  a time), or one instance by name (:meth:`PacsClient.retrieve_instance`, what a resumed run
  needs). An instance pydicom cannot parse still reaches the batch, where ingest quarantines it.
- The PACS holds identified data: every error is one :class:`PacsError` whose message names a
  study by its number and a short one-way key (``study 3 (a1b2c3d4)``), never by its UID, and
  never repeats what the server answered (it may echo patient data).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import requests
from dicomweb_client.api import DICOMwebClient

from medcurate.io import sha256_text

if TYPE_CHECKING:
    from medcurate.services.orthanc import OrthancServer

#: (connect, read) seconds: a stalled server fails a study instead of hanging the sensor
DEFAULT_TIMEOUT = (5.0, 60.0)
_EXACT = re.compile(r"^[A-Za-z0-9._\-]*$")  # what quote_plus leaves alone (Orthanc reads it as is)
_DATE_RANGE = re.compile(r"^(\d{8})?-(\d{8})?$|^\d{8}$")
_DICOM_PART = 'multipart/related; type="application/dicom"'

# DICOM JSON tags
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
N_INSTANCES = "00201208"  # NumberOfStudyRelatedInstances

T = TypeVar("T")

# dicomweb-client logs every request URL at DEBUG: those URLs hold study UIDs and accession
# numbers, so its debug output never reaches a log (a run at DEBUG would write them out).
_web_log = logging.getLogger("dicomweb_client")
_web_log.setLevel(max(_web_log.level, logging.INFO))


AUTH, SERVER, TIMEOUT, CONNECTION, HTTP, ANSWER, INCOMPLETE = (
    "auth",
    "server",
    "timeout",
    "connection",
    "http",
    "answer",
    "incomplete",
)


class PacsError(RuntimeError):
    """The PACS could not be searched or read: wrong credentials, a server error, a timeout, no
    answer. The message names what failed by a short one-way key, never by an identifier.

    ``kind`` says which (``auth``, ``server``, ``timeout``, ``connection``, ``http``, ``answer``,
    ``incomplete``) and ``status`` the HTTP status when there was one: credentials and an
    unreachable server fail a whole pull, the others one study."""

    def __init__(self, message: str, kind: str = ANSWER, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status

    @property
    def fails_everything(self) -> bool:
        """Wrong credentials or no server: no study can succeed, so a pull stops."""
        return self.kind in (AUTH, CONNECTION)


def study_key(study_uid: str) -> str:
    """The short one-way key of a study: ``sha256(StudyInstanceUID)[:8]`` (safe in logs)."""
    return sha256_text(study_uid)[:8]


def study_label(study_uid: str, number: int | None = None) -> str:
    """``study 3 (a1b2c3d4)``, or ``study (a1b2c3d4)`` without a number."""
    n = f" {number}" if number is not None else ""
    return f"study{n} ({study_key(study_uid)})"


def check_exact(field: str, value: str) -> str:
    """``value`` when it is an exact match value Orthanc reads as sent; refuses wildcards and
    anything percent-escaping would change (Orthanc 1.10 would silently match nothing)."""
    if not _EXACT.match(value):
        raise ValueError(
            f"{field}: only exact values can be queried on this PACS (letters, digits, '.', '-',"
            " '_'); wildcards and names are not supported"
        )
    return value


def date_range(start: str | None = None, end: str | None = None) -> str:
    """A QIDO StudyDate value ``YYYYMMDD-YYYYMMDD`` (either side may be open)."""
    value = f"{start or ''}-{end or ''}"
    if value == "-" or not _DATE_RANGE.match(value):
        raise ValueError("dates are YYYYMMDD (from, to or both)")
    return value


@dataclass(frozen=True)
class StudyRef:
    """A study found on the PACS: its UID (identified: stays in memory and restricted/) and the
    instance count the PACS reports (None when it does not say)."""

    uid: str
    instances: int | None

    @property
    def key(self) -> str:
        return study_key(self.uid)


@dataclass(frozen=True)
class InstanceRef:
    series_uid: str
    sop_uid: str


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


class PacsClient:
    """One PACS: ``url`` is its REST root (Orthanc's change feed), ``dicomweb`` its DICOMweb root
    (default ``url + "/dicom-web"``); ``name`` says which server (``clinical``) in paths."""

    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: str | None = None,
        dicomweb: str | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        name: str = "clinical",
    ) -> None:
        self.url = url.rstrip("/")
        self.dicomweb = (dicomweb or self.url + "/dicom-web").rstrip("/")
        self.name = name
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # never route patient data through an environment proxy
        if username is not None:
            self.session.auth = (username, password or "")
        self.web = DICOMwebClient(self.dicomweb, session=self.session, timeout=timeout)
        self.web.set_http_retry_params(retry=False)

    def __repr__(self) -> str:  # no credentials
        return f"PacsClient({self.name}, {self.url})"

    @classmethod
    def from_server(
        cls, server: OrthancServer, timeout: float | tuple[float, float] = DEFAULT_TIMEOUT
    ) -> PacsClient:
        """The client of a managed Orthanc (:func:`medcurate.services.orthanc.start`)."""
        return cls(
            server.url,
            server.username,
            server.password,
            dicomweb=server.dicomweb,
            timeout=timeout,
            name=server.name,
        )

    def close(self) -> None:
        self.session.close()

    # --- errors -----------------------------------------------------------------------------

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` (a request to the PACS), turning every transport failure into a
        :class:`PacsError` that says ``what`` failed and why, in words safe for a log.

        The PacsError is raised outside the ``except``: the original exception (its URL holds
        study UIDs) is neither its cause nor its context, so no traceback shows it."""
        try:
            return fn()
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else 0
            kind = AUTH if code in (401, 403) else SERVER if code >= 500 else HTTP
            error = PacsError(self._http_message(what, code), kind, code)
        except requests.Timeout:
            error = PacsError(
                f"{what}: the PACS at {self.url} did not answer within {self._read_timeout()} s "
                "(timeout)",
                TIMEOUT,
            )
        except requests.ConnectionError:
            error = PacsError(
                f"{what}: cannot connect to the PACS at {self.url} (connection refused or reset)",
                CONNECTION,
            )
        except (requests.RequestException, ValueError) as exc:  # a malformed answer
            error = PacsError(
                f"{what}: unexpected answer from the PACS ({type(exc).__name__})", ANSWER
            )
        raise error

    def _http_message(self, what: str, code: int) -> str:
        if code in (401, 403):
            return (
                f"{what}: the PACS at {self.url} refused the credentials (HTTP {code}); check "
                "MEDCURATE_PACS_USER / MEDCURATE_PACS_PASSWORD"
            )
        if code >= 500:
            return f"{what}: server error from the PACS at {self.url} (HTTP {code})"
        return f"{what}: the PACS at {self.url} answered HTTP {code}"

    def _read_timeout(self) -> float:
        t = self.timeout
        return float(t[1] if isinstance(t, tuple) else t)

    # --- REST (Orthanc) ---------------------------------------------------------------------

    def rest(self, path: str, params: dict[str, Any] | None = None, what: str = "") -> Any:
        """GET ``url + path`` as JSON (Orthanc's own API: the change feed, study ids)."""

        def get() -> Any:
            r = self.session.get(self.url + path, params=params, timeout=self.timeout)
            r.raise_for_status()
            return r.json()

        return self.call(what or "reading the PACS", get)

    def store_bytes(self, data: bytes, what: str = "storing an instance") -> None:
        """POST one DICOM file to Orthanc's ``/instances`` (the demo and tests fill the PACS)."""

        def post() -> None:
            r = self.session.post(
                self.url + "/instances",
                data=data,
                headers={"Content-Type": "application/dicom"},
                timeout=self.timeout,
            )
            r.raise_for_status()

        self.call(what, post)

    def store_tree(self, folder: Path, workers: int = 4) -> int:
        """POST every ``*.dcm`` below ``folder``, ``workers`` at a time (Orthanc stores them side
        by side: the demo's 1,170 files in 1.6-1.9 s, one by one 3.1 s); returns how many were
        stored. The first failure raises, naming the file by its number in sorted order."""
        files = sorted(Path(folder).rglob("*.dcm"))

        def one(item: tuple[int, Path]) -> None:
            n, f = item
            self.store_bytes(f.read_bytes(), f"storing file #{n}")

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for _ in pool.map(one, enumerate(files, 1)):
                pass
        return len(files)

    # --- QIDO-RS ----------------------------------------------------------------------------

    def _studies(self, filters: dict[str, str], what: str) -> list[StudyRef]:
        def search() -> list[dict[str, Any]]:
            return self.web.search_for_studies(
                search_filters=filters, fields=[N_INSTANCES], get_remaining=False
            )

        found: dict[str, StudyRef] = {}
        for item in self.call(what, search):
            uid = _value(item, STUDY_UID)
            if uid:
                n = _value(item, N_INSTANCES)
                found[str(uid)] = StudyRef(str(uid), None if n is None else int(n))
        return [found[u] for u in sorted(found)]

    def search_studies(
        self,
        since: str | None = None,
        until: str | None = None,
        modality: str | None = None,
    ) -> list[StudyRef]:
        """Studies by StudyDate range (``YYYYMMDD``, either end open) and/or ModalitiesInStudy;
        sorted by UID (deterministic)."""
        filters: dict[str, str] = {}
        if since or until:
            filters["StudyDate"] = date_range(since, until)
        if modality:
            filters["ModalitiesInStudy"] = check_exact("modality", modality.upper())
        return self._studies(filters, "searching studies")

    def find_study(self, study_uid: str) -> StudyRef | None:
        """One study by StudyInstanceUID, or None when the PACS does not hold it."""
        check_exact("StudyInstanceUID", study_uid)
        found = self._studies(
            {"StudyInstanceUID": study_uid}, f"searching {study_label(study_uid)}"
        )
        return found[0] if found else None

    def search_accessions(self, accessions: list[str]) -> list[StudyRef]:
        """Studies of each accession number (one exact query each); an accession number the PACS
        does not know finds nothing. Sorted by UID, each study once."""
        found: dict[str, StudyRef] = {}
        for i, acc in enumerate(accessions, 1):
            check_exact(f"accession number #{i}", acc)
            for s in self._studies({"AccessionNumber": acc}, f"searching accession number #{i}"):
                found[s.uid] = s
        return [found[u] for u in sorted(found)]

    def study_instances(self, study_uid: str, label: str | None = None) -> list[InstanceRef]:
        """Every instance of a study (series, SOP UID), sorted, paged until the PACS has no more."""
        what = f"listing the instances of {label or study_label(study_uid)}"
        refs: set[InstanceRef] = set()
        offset = 0
        while True:

            def page(offset: int = offset) -> list[dict[str, Any]]:
                return self.web.search_for_instances(
                    study_instance_uid=study_uid,
                    fields=[SERIES_UID, SOP_UID],
                    offset=offset or None,
                )

            items = self.call(what, page)
            before = len(refs)
            for item in items:
                series, sop = _value(item, SERIES_UID), _value(item, SOP_UID)
                if series and sop:
                    refs.add(InstanceRef(str(series), str(sop)))
            if not items or len(refs) == before:
                break
            offset += len(items)
        return sorted(refs, key=lambda r: (r.series_uid, r.sop_uid))

    # --- WADO-RS ----------------------------------------------------------------------------

    def retrieve_instance(
        self, study_uid: str, ref: InstanceRef, label: str | None = None
    ) -> bytes:
        """One instance's bytes as the PACS sent them (WADO-RS, ``application/dicom``)."""
        url = f"{self.dicomweb}/studies/{study_uid}/series/{ref.series_uid}/instances/{ref.sop_uid}"
        what = f"retrieving an instance of {label or study_label(study_uid)}"

        def get() -> bytes:
            r = self.session.get(url, headers={"Accept": _DICOM_PART}, timeout=self.timeout)
            r.raise_for_status()
            parts = [p for p in self.web._decode_multipart_message(r, stream=False) if p]
            if len(parts) != 1:
                raise ValueError(f"{len(parts)} parts")
            return bytes(parts[0])

        return self.call(what, get)

    def iter_series(
        self, study_uid: str, series_uid: str, label: str | None = None
    ) -> Iterator[bytes]:
        """A series' instances as the PACS sent them, in one streamed WADO-RS answer decoded
        part by part (one instance in memory at a time; ~10x faster than one request each).
        The parts carry no name: the caller reads each part's SOPInstanceUID."""
        url = f"{self.dicomweb}/studies/{study_uid}/series/{series_uid}"
        what = f"retrieving a series of {label or study_label(study_uid)}"

        def get() -> requests.Response:
            r = self.session.get(
                url, headers={"Accept": _DICOM_PART}, timeout=self.timeout, stream=True
            )
            r.raise_for_status()
            return r

        response = self.call(what, get)
        parts = self.web._decode_multipart_message(response, stream=True)
        try:
            while (part := self.call(what, lambda: next(parts, None))) is not None:
                if part:
                    yield bytes(part)
        finally:
            response.close()
