"""PACS retrieval throughput (issue 17): instances/s over WADO-RS against a plain REST download.

Generated studies (at least 1,000 instances: 12 patients, seed 0, give 1,043) are stored into
a fresh clinical Orthanc started by the project's own code in a throwaway MEDCURATE_HOME, then, in
this one process and interleaved repeat by repeat (so a drift of the machine hits every method):

- ``pull_studies``: the whole pull into a claimed raw batch (its own QIDO listing, streamed
  series, atomic owner-only writes, hashing, the claim), into a fresh home each repeat;
- WADO-RS one streamed request per series (``PacsClient.iter_series``), bytes kept in memory;
- WADO-RS one request per instance (``PacsClient.retrieve_instance``), bytes kept in memory;
- the baseline: Orthanc's own REST ``GET /instances/{id}/file``, one request per instance over
  the same authenticated session, bytes kept in memory.

Listings for the last three are made once, before any timing. Each figure is the median of the
repeats; ratios are instances/s against the baseline's. Prints measured figures, asserts nothing
about time (only that every method got every instance, so the figures compare like with like).

Run: .venv/bin/python bench/pacs.py [--patients 12] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medcurate.config import Zones
from medcurate.pacs.client import InstanceRef, PacsClient
from medcurate.pacs.retrieve import pull_studies
from medcurate.services import orthanc
from medcurate.synth import generate_studies

MIN_INSTANCES = 1000


@dataclass
class Method:
    """One way of getting every instance: ``run`` returns (instances, bytes) it received."""

    name: str
    run: Callable[[int], tuple[int, int]]
    seconds: list[float]


def _pull(client: PacsClient, uids: list[str], work: Path) -> Callable[[int], tuple[int, int]]:
    def run(repeat: int) -> tuple[int, int]:
        zones = Zones(work / f"pull-{repeat}").ensure()  # a fresh home: nothing staged yet
        res = pull_studies(zones, client, uids)
        if res.failed or res.batch is None:
            raise SystemExit(f"pull failed: {res.summary_line()}")
        files = [p for p in zones.raw_batch(res.batch).rglob("*") if p.is_file()]
        return res.instances, sum(p.stat().st_size for p in files)

    return run


def _series(client: PacsClient, series: list[tuple[str, str]]) -> Callable[[int], tuple[int, int]]:
    def run(repeat: int) -> tuple[int, int]:
        n = size = 0
        for study_uid, series_uid in series:
            for part in client.iter_series(study_uid, series_uid):
                n, size = n + 1, size + len(part)
        return n, size

    return run


def _instances(
    client: PacsClient, refs: list[tuple[str, InstanceRef]]
) -> Callable[[int], tuple[int, int]]:
    def run(repeat: int) -> tuple[int, int]:
        size = sum(len(client.retrieve_instance(uid, ref)) for uid, ref in refs)
        return len(refs), size

    return run


def _rest(client: PacsClient, ids: list[str]) -> Callable[[int], tuple[int, int]]:
    def get(oid: str) -> int:
        r = client.session.get(f"{client.url}/instances/{oid}/file", timeout=client.timeout)
        r.raise_for_status()
        return len(r.content)

    def run(repeat: int) -> tuple[int, int]:
        return len(ids), sum(get(oid) for oid in ids)

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--patients", type=int, default=12, help="generated patients (12: 1,043 instances)"
    )
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per method (median)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="medcurate-bench-") as tmp:
        t = Path(tmp)
        t0 = time.perf_counter()
        summary = generate_studies(t / "studies", patients=args.patients, seed=0, truth=t / "truth")
        gen_s = time.perf_counter() - t0
        if summary.files < MIN_INSTANCES:
            print(f"note: {summary.files} instances (< {MIN_INSTANCES}): raise --patients")
        home = Zones(t / "pacs-home").ensure().home
        server = orthanc.start(
            home,
            orthanc.CLINICAL,
            port=orthanc.free_port(),
            dicom_port=orthanc.free_port(),
            env={},  # generated credentials, never the developer's
        )
        try:
            bench(server, t, summary.files, gen_s, args.repeats)
        finally:
            orthanc.stop(home, orthanc.CLINICAL, kill=True)  # a throwaway home


def bench(server: orthanc.OrthancServer, t: Path, files: int, gen_s: float, repeats: int) -> None:
    client = PacsClient.from_server(server)
    system = client.rest("/system")
    dicomweb = client.rest("/plugins/dicom-web")
    t0 = time.perf_counter()
    stored = client.store_tree(t / "studies")
    store_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    uids = [s.uid for s in client.search_studies()]
    refs = [(uid, ref) for uid in uids for ref in client.study_instances(uid)]
    series = sorted({(uid, ref.series_uid) for uid, ref in refs})
    ids = sorted(client.rest("/instances"))
    list_s = time.perf_counter() - t0
    n = len(refs)
    if not n == len(ids) == stored == files:
        raise SystemExit(
            f"counts differ: generated {files}, stored {stored}, listed {n}/{len(ids)}"
        )

    print(
        f"machine: {platform.platform()}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"Orthanc {system.get('Version')} (DICOMweb plugin {dicomweb.get('Version')}), "
        "loopback, basic auth, TCP_NODELAY"
    )
    print(
        f"generated {files} instances in {len(uids)} studies / {len(series)} series "
        f"({gen_s:.1f} s); stored with store_tree in {store_s:.2f} s "
        f"({stored / store_s:.0f} instances/s); listed (QIDO + /instances) in {list_s:.2f} s"
    )

    methods = [
        Method("pull_studies -> claimed batch", _pull(client, uids, t), []),
        Method("WADO-RS per series (streamed)", _series(client, series), []),
        Method("WADO-RS per instance", _instances(client, refs), []),
        Method("REST /instances/{id}/file", _rest(client, ids), []),
    ]
    sizes: dict[str, int] = {}
    for repeat in range(repeats):
        for m in methods:
            t0 = time.perf_counter()
            got, size = m.run(repeat)
            m.seconds.append(time.perf_counter() - t0)
            if got != n:
                raise SystemExit(f"{m.name}: {got} instances, expected {n}")
            sizes[m.name] = size
    client.close()
    if len(set(sizes.values())) > 1:  # WADO-RS sends the stored bytes unless asked to transcode
        print(f"note: byte totals differ between methods: {sizes}")

    base = n / statistics.median(methods[-1].seconds)
    print(f"\nmedian of {repeats} repeats, {n} instances each, sequential requests:")
    print(
        f"{'method':32} {'inst':>5} {'MB':>6} {'s':>6} {'min-max s':>11} {'inst/s':>7} "
        f"{'x REST':>6}"
    )
    for m in methods:
        med = statistics.median(m.seconds)
        spread = f"{min(m.seconds):.2f}-{max(m.seconds):.2f}"
        print(
            f"{m.name:32} {n:5d} {sizes[m.name] / 1e6:6.1f} {med:6.2f} {spread:>11} "
            f"{n / med:7.0f} {n / med / base:6.2f}"
        )


if __name__ == "__main__":
    main()
