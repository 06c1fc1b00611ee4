"""The DICOMweb client against a real Orthanc: searches find exactly what they must, and every
failure (credentials, server error, stall, no server) is one PacsError that names no UID.

Also home to what the other PACS tests share: generated studies stored into Orthanc, and a
fault-injecting proxy (500 for one study, a corrupted instance, a stall) in front of it.
"""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
import requests

from medcurate.pacs.client import (
    PacsClient,
    PacsError,
    check_exact,
    date_range,
    study_key,
    study_label,
)
from medcurate.services import orthanc
from medcurate.synth import generate_studies


@dataclass(frozen=True)
class Study:
    uid: str
    date: str
    accession: str
    modality: str
    files: tuple[Path, ...]
    sops: frozenset[str]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[Study]:
    """2 patients, 4 studies (2 CT of 80 instances, 2 MR of 64), sorted by UID."""
    root = tmp_path_factory.mktemp("pacs-synth")
    generate_studies(root / "studies", patients=2, seed=0, truth=root / "truth")
    return studies_of(root / "studies")


def studies_of(folder: Path) -> list[Study]:
    found: dict[str, dict] = {}
    for f in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        s = found.setdefault(
            ds.StudyInstanceUID,
            {"date": ds.StudyDate, "acc": ds.AccessionNumber, "mod": ds.Modality, "files": []},
        )
        s["files"].append((f, ds.SOPInstanceUID))
    return [
        Study(
            uid,
            s["date"],
            s["acc"],
            s["mod"],
            tuple(f for f, _ in s["files"]),
            frozenset(sop for _, sop in s["files"]),
        )
        for uid, s in sorted(found.items())
    ]


def store(client: PacsClient, studies: list[Study]) -> None:
    for s in studies:
        for f in s.files:
            client.store_bytes(f.read_bytes())


# --- a fault-injecting proxy in front of Orthanc ----------------------------------------------


@dataclass
class Faults:
    fail_study: str | None = None  # 500 for this study's WADO-RS requests (series, instance) ...
    fail_after: int = 0  # ... after this many of them went through
    corrupt_sop: str | None = None  # this instance's bytes replaced by garbage
    stall: bool = False  # every request hangs (until the test ends)
    seen: dict[str, int] = field(default_factory=dict)


class FaultProxy:
    """A loopback HTTP proxy to ``target`` that injects :class:`Faults`."""

    def __init__(self, target: str) -> None:
        self.faults = Faults()
        self.release = threading.Event()
        self.upstream = requests.Session()
        self.upstream.trust_env = False
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # headers and body in one write (no Nagle/delayed-ACK stall)

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self, method: str) -> None:
                f = proxy.faults
                if f.stall:
                    proxy.release.wait(10)
                    return
                if "/instances/" in self.path and "/series/" in self.path:
                    f.seen["instance"] = f.seen.get("instance", 0) + 1
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                if f.fail_study and f"/studies/{f.fail_study}/series/" in self.path:
                    f.seen["wado"] = f.seen.get("wado", 0) + 1
                    if f.seen["wado"] > f.fail_after:
                        self._send(500, "text/plain", b"injected failure")
                        return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                r = proxy.upstream.request(method, target + self.path, data=body, headers=headers)
                content = r.content
                ctype = r.headers.get("Content-Type", "")
                if f.corrupt_sop and ctype.startswith("multipart/related"):
                    content = _corrupt_part(content, ctype, f.corrupt_sop)
                self._send(r.status_code, ctype, content)

            def _send(self, code: int, ctype: str, content: bytes) -> None:
                self.send_response(code)
                if ctype:
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.upstream.close()


def _corrupt_part(content: bytes, ctype: str, sop: str) -> bytes:
    """The multipart answer with the DICOM bytes of the part holding ``sop`` replaced by
    garbage (a series answer or a single instance's)."""
    boundary = b"--" + ctype.split("boundary=")[1].split(";")[0].strip('"').encode()
    segments = content.split(boundary)
    for i, seg in enumerate(segments):
        if sop.encode() in seg:
            head, _body = seg.split(b"\r\n\r\n", 1)
            segments[i] = head + b"\r\n\r\n" + b"not DICOM at all " * 8 + b"\r\n"
    return boundary.join(segments)


@pytest.fixture
def proxy(clinical_pacs: orthanc.OrthancServer) -> Iterator[FaultProxy]:
    p = FaultProxy(clinical_pacs.url)
    yield p
    p.close()


def proxied(server: orthanc.OrthancServer, p: FaultProxy, timeout: float = 10.0) -> PacsClient:
    return PacsClient(
        p.url, server.username, server.password, timeout=(5.0, timeout), name=server.name
    )


# --- without a server -------------------------------------------------------------------------


def test_study_key_is_a_short_one_way_hash() -> None:
    uid = "1.2.826.0.1.3680043.8.498.1"
    assert len(study_key(uid)) == 8
    assert study_key(uid) != study_key(uid + "1")
    assert study_label(uid, 3) == f"study 3 ({study_key(uid)})"
    assert uid not in study_label(uid, 3)


@pytest.mark.parametrize("value", ["SMITH*", "DOE^JOHN", "a b", "1%2E2"])
def test_wildcards_and_names_are_refused(value: str) -> None:
    # Orthanc 1.10 would read them %-escaped and silently match nothing.
    with pytest.raises(ValueError, match="exact values"):
        check_exact("AccessionNumber", value)


def test_date_range_forms() -> None:
    assert date_range("20220101", "20221231") == "20220101-20221231"
    assert date_range("20220101") == "20220101-"
    assert date_range(None, "20221231") == "-20221231"
    for bad in [(None, None), ("2022-01-01", None), ("2022011", None)]:
        with pytest.raises(ValueError):
            date_range(*bad)


def test_repr_holds_no_password() -> None:
    c = PacsClient("http://127.0.0.1:9", "user", "s3cret-pw")
    assert "s3cret-pw" not in repr(c)


def test_no_server_is_a_connection_error() -> None:
    c = PacsClient(f"http://127.0.0.1:{orthanc.free_port()}", "u", "p")
    with pytest.raises(PacsError, match="cannot connect") as e:
        c.search_studies(since="20200101")
    assert e.value.fails_everything


# --- against Orthanc --------------------------------------------------------------------------


@pytest.mark.integration
def test_searches_find_exactly_their_studies(
    clinical_pacs: orthanc.OrthancServer, generated: list[Study]
) -> None:
    c = PacsClient.from_server(clinical_pacs)
    studies_folder = generated[0].files[0].parents[3]  # studies/<patient>/<study>/<series>/
    assert c.store_tree(studies_folder) == sum(len(s.files) for s in generated)
    everything = c.search_studies(since="19000101")
    assert [s.uid for s in everything] == [s.uid for s in generated]
    assert [s.instances for s in everything] == [len(s.files) for s in generated]

    target = generated[0]  # a date range holding exactly one study's date
    in_range = [s.uid for s in generated if s.date == target.date]
    found = c.search_studies(since=target.date, until=target.date)
    assert [s.uid for s in found] == in_range
    year = target.date[:4]
    found = c.search_studies(since=year + "0101", until=year + "1231")
    assert [s.uid for s in found] == [s.uid for s in generated if s.date[:4] == year]

    mr = c.search_studies(modality="MR")
    assert [s.uid for s in mr] == [s.uid for s in generated if s.modality == "MR"]

    picked = [generated[1], generated[3]]
    found = c.search_accessions([s.accession for s in picked] + ["NOSUCHACC1"])
    assert [s.uid for s in found] == [s.uid for s in picked]

    ref = c.find_study(target.uid)
    assert ref is not None and ref.instances == len(target.files)
    assert c.find_study("1.2.3.4.5.6.7.8.9") is None

    refs = c.study_instances(target.uid)
    assert {r.sop_uid for r in refs} == target.sops
    data = c.retrieve_instance(target.uid, refs[0])
    assert pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID == refs[0].sop_uid


@pytest.mark.integration
def test_wrong_password_says_credentials(clinical_pacs: orthanc.OrthancServer) -> None:
    c = PacsClient(clinical_pacs.url, clinical_pacs.username, "not-the-password")
    with pytest.raises(PacsError, match="refused the credentials") as e:
        c.search_studies(since="20200101")
    assert e.value.kind == "auth" and e.value.fails_everything
    assert "not-the-password" not in str(e.value)


@pytest.mark.integration
def test_server_error_names_the_study_by_key_only(
    clinical_pacs: orthanc.OrthancServer, generated: list[Study], proxy: FaultProxy
) -> None:
    s = generated[0]
    store(PacsClient.from_server(clinical_pacs), [s])
    proxy.faults.fail_study = s.uid
    c = proxied(clinical_pacs, proxy)
    ref = c.study_instances(s.uid)[0]
    with pytest.raises(PacsError) as e:
        c.retrieve_instance(s.uid, ref, study_label(s.uid, 1))
    msg = str(e.value)
    assert "HTTP 500" in msg and f"study 1 ({study_key(s.uid)})" in msg
    assert s.uid not in msg and e.value.kind == "server"
    # the requests error (its URL names the study) is not chained to it
    assert e.value.__cause__ is None and e.value.__context__ is None


@pytest.mark.integration
def test_stalled_server_is_a_timeout(
    clinical_pacs: orthanc.OrthancServer, proxy: FaultProxy
) -> None:
    proxy.faults.stall = True
    c = proxied(clinical_pacs, proxy, timeout=0.5)
    with pytest.raises(PacsError, match="timeout") as e:
        c.search_studies(since="20200101")
    assert e.value.kind == "timeout" and not e.value.fails_everything
