"""The one Label Studio client and the one polling helper, without a server: what a client says
when nothing answers, how waiting ends, and the stage results the annotation assets return."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from annotation.adjudication import ConsensusResult, Thresholds, run_consensus
from annotation.client import LabelStudioClient, LabelStudioUnreachable
from annotation.model import ModelOutcome
from annotation.rounds import RoundProgress
from annotation.stages import (
    AnnotationsResult,
    RoundNotReady,
    TasksConfig,
    TasksResult,
    pre_annotations_line,
    run_annotation_tasks,
    run_annotations,
)
from medcurate.config import Zones
from medcurate.io import atomic_write_text, write_nifti
from medcurate.services.labelstudio import free_port
from medcurate.services.wait import WaitTimeout, wait_until
from medcurate.stage import JsonValue, PathValue, StageResult, UrlValue


def test_wait_until_returns_the_first_truthy_value() -> None:
    calls = iter([None, 0, "", "ready"])
    assert wait_until(lambda: next(calls), timeout=5, interval=0.001, what="x") == "ready"


def test_wait_until_times_out_naming_what_it_waited_for() -> None:
    n = 0

    def never() -> bool:
        nonlocal n
        n += 1
        return False

    t0 = time.monotonic()
    with pytest.raises(WaitTimeout, match="the export not done after 0 s"):
        wait_until(never, timeout=0.05, interval=0.01, what="the export")
    assert time.monotonic() - t0 < 2 and n >= 2  # asked again, and once more at the deadline
    assert issubclass(WaitTimeout, TimeoutError)


def test_wait_until_lets_the_predicate_stop_the_wait() -> None:
    def died() -> bool:
        raise RuntimeError("the server exited")

    with pytest.raises(RuntimeError, match="exited"):
        wait_until(died, timeout=5, interval=0.01)


def test_a_client_of_a_server_that_is_down_says_what_to_do() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = LabelStudioClient(url + "/", "secret-token-123", timeout=2)
    assert client.url == url and "secret-token-123" not in repr(client)
    assert not client.healthy()
    with pytest.raises(LabelStudioUnreachable) as err:
        client.check()
    message = str(err.value)
    assert url in message and "medcurate labelstudio start" in message and "make ui" in message
    with pytest.raises(LabelStudioUnreachable):
        client.tasks(1)  # a refused connection is "unreachable", not a traceback


def _results() -> list[StageResult]:
    return [
        TasksResult(
            "round-1",
            3,
            True,
            "seed: 4",
            4,
            12,
            12,
            0,
            12,
            2,
            2,
            "withheld: validation Dice 0.26 < floor 0.50",
            "http://127.0.0.1:8080/projects/3/data",
        ),
        AnnotationsResult("round-1", 24, 2, 12, 12, 5, 0.5, "/x/annotations.parquet", 3),
        ConsensusResult(4, {"round-1": {"samples": 4}}, {"normal": 4}, 0.5, 0.8, 1, 0, "/l"),
        ModelOutcome(1, "proposal", "proposal-v1-abc", predictions=4),
    ]


def test_stage_results_follow_the_contract() -> None:
    for result in _results():
        assert isinstance(result, StageResult)
        assert result.problems == []
        assert result.summary_line() and isinstance(result.metadata(), dict)
    tasks, anns, consensus, model = _results()
    assert tasks.metadata()["tasks_imported"] == 12 and "12 tasks imported" in tasks.summary_line()
    assert tasks.metadata()["pre_annotations"] == "withheld: validation Dice 0.26 < floor 0.50"
    assert "pre-annotations withheld" in tasks.summary_line()
    url = tasks.metadata()["project_url"]
    assert isinstance(url, UrlValue) and url == "http://127.0.0.1:8080/projects/3/data"
    assert isinstance(anns.metadata()["path"], PathValue)
    # the round sensor's run key of this round's state, and the counts that say it is complete
    assert anns.metadata()["round_key"] == RoundProgress("round-1", 3, 12, 12).run_key
    assert anns.metadata()["round_key"] == "round-1-project-3-tasks-12"
    assert (anns.metadata()["tasks_complete"], anns.metadata()["tasks"]) == (12, 12)
    md = consensus.metadata()
    assert isinstance(md["rounds"], JsonValue) and md["adjudicated_samples"] == 0
    assert model.metadata()["round_number"] == 1 and "val_dice" not in model.metadata()
    assert "pre_annotations" not in model.metadata()  # unset: not shown as an empty string


def test_the_tasks_stage_reports_the_model_outcome(tmp_path: Path) -> None:
    z = Zones(tmp_path)
    assert pre_annotations_line(z, "round-2", 0).startswith("none: annotation_model")
    assert pre_annotations_line(z, "round-2", 5).startswith("offered: model outcome not")
    why = "withheld: validation Dice 0.26 < floor 0.50"
    outcome = ModelOutcome(2, "unet", "unet2d-x", val_size=1, val_dice=0.26, pre_annotations=why)
    atomic_write_text(z.round_model_outcome("round-2"), outcome.outcome_json())
    assert pre_annotations_line(z, "round-2", 0) == "withheld: validation Dice 0.26 < floor 0.50"


class _NoServer:
    """Stands in for the client where a stage must fail before it talks to Label Studio."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the stage called the server ({name}) before its checks")


def test_round_stages_that_cannot_start_say_why(tmp_path: Path) -> None:
    z = Zones(tmp_path)
    with pytest.raises(RoundNotReady, match=r"round-2: no round\.json"):
        run_annotations(z, "round-2", _NoServer(), b"salt")  # type: ignore[arg-type]
    z.volumes.mkdir(parents=True)
    pd.DataFrame({"sample_id": ["a"], "nifti_path": ["a.nii.gz"], "status": ["ok"]}).to_parquet(
        z.volumes_table
    )
    z.labels.mkdir()
    pd.DataFrame({"sample_id": ["a"], "label": ["normal"]}).to_parquet(z.labels_table)
    with pytest.raises(RoundNotReady, match="no samples left"):
        run_annotation_tasks(z, "round-2", TasksConfig(), _NoServer())  # type: ignore[arg-type]


def test_consensus_from_exported_files_alone(tmp_path: Path) -> None:
    """Without Label Studio (adjudicate off): consensus from annotations.parquet and the maps."""
    z = Zones(tmp_path)
    shape, affine = (6, 5, 3), np.diag([1.5, 1.5, 3.0, 1.0])
    write_nifti(z.volumes / "v1.nii.gz", np.zeros(shape), affine)
    lesion = np.zeros(shape, np.uint8)
    lesion[1:3, 1:3, 1] = 1
    rows = []
    for who in ("ann-a", "ann-b", "ann-c"):
        rel = z.annotator_mask_relpath("round-1", "s1", who)
        write_nifti(z.annotation / rel, lesion, affine, dtype="uint8")
        for k in (0, 1):
            rows.append(
                {"round": "round-1", "task_key": f"s1:k{k:04d}", "sample_id": "s1", "slice_k": k,
                 "annotator": who, "choice": "abnormal" if k else "normal", "has_mask": bool(k),
                 "mask_voxels": 4 * k, "mask_path": rel, "lead_time": 1.0, "created_at": "",
                 "updated_at": "", "was_cancelled": False}
            )  # fmt: skip
    pd.DataFrame(rows).to_parquet(z.round_annotations("round-1"))
    slices = [
        {"round": "round-1", "task_key": f"s1:k{k:04d}", "sample_id": "s1", "slice_k": k,
         "image_relpath": f"round-1/images/s1/s1_k{k:04d}.png", "height": 5, "width": 6,
         "shape": list(shape), "nifti_path": "v1.nii.gz"}
        for k in (0, 1)
    ]  # fmt: skip
    pd.DataFrame(slices).to_parquet(z.round_slices("round-1"))
    result = run_consensus(z, Thresholds(), None, b"")
    assert (result.samples, result.labels, result.pending_adjudication) == (1, {"abnormal": 1}, 0)
    assert result.kappa == pytest.approx(1.0) and result.mean_dice == pytest.approx(1.0)
    assert not math.isnan(result.rounds["round-1"]["kappa"])
    labels = pd.read_parquet(z.labels_table)
    assert labels["mask_path"].tolist() == ["masks/s1.nii.gz"]  # relative to labels/ (frozen)
    assert labels["source_round"].tolist() == ["round-1"]
    assert (z.label_masks / "s1.nii.gz").exists()


def test_calls_reuse_one_connection_per_thread_and_send_the_token() -> None:
    """Keep-alive: a round's hundreds of submissions skip a TCP handshake each; threads do not
    share a connection (requests' sessions are not thread-safe)."""
    import http.server
    import json
    import threading

    seen: list[tuple[int, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def do_GET(self) -> None:
            seen.append((self.client_address[1], self.headers.get("Authorization", "")))
            body = json.dumps({"id": 1}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = LabelStudioClient(f"http://127.0.0.1:{server.server_port}", "tok")
        for _ in range(3):
            assert client.whoami() == {"id": 1}
        other = threading.Thread(target=client.whoami)
        other.start()
        other.join()
    finally:
        server.shutdown()
        server.server_close()
    ports = [port for port, _ in seen]
    assert len(ports) == 4 and len(set(ports[:3])) == 1  # one connection for this thread's calls
    assert ports[3] != ports[0]  # the other thread's own
    assert {auth for _, auth in seen} == {"Token tok"}
