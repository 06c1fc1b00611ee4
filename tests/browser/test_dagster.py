"""The Dagster UI as a data engineer sees it after a release: the lineage lists every asset of the
code location, and the release asset's page shows its latest materialization's metadata."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from assets.release import (
    curated_samples,
    dataset_release,
    dataset_splits,
    no_patient_in_two_splits,
)
from assets.resources import MedcurateHome
from medcurate.config import Zones
from medcurate.home import init_home
from medcurate.services import figures
from medcurate.services.labelstudio import free_port
from medcurate.services.wait import WaitTimeout, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
DATASET = "browser-demo"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture
def released_home(tmp_path: Path, release_cohort, monkeypatch) -> Iterator[tuple[Zones, dict]]:  # type: ignore[no-untyped-def]
    """A MEDCURATE_HOME (with init-home's dagster.yaml: telemetry off) whose Dagster instance
    holds one materialization of the release chain, and its figures server (as `make ui` runs
    it) on a free port, so the plots in the metadata load."""
    z = Zones(tmp_path / "home")
    init_home(z)
    server = figures.start(z.home, free_port())
    monkeypatch.setenv(figures.ENV_URL, server.url)  # read when the metadata is written
    vol, lab = release_cohort(z.home, 8)
    vol.to_parquet(z.volumes_table, index=False)
    lab.to_parquet(z.labels_table, index=False)
    with dg.DagsterInstance.from_config(str(z.dagster_home)) as instance:
        result = dg.materialize(
            [curated_samples, dataset_splits, no_patient_in_two_splits, dataset_release],
            resources={"home": MedcurateHome(home=str(z.home))},
            run_config={
                "ops": {
                    "dataset_release": {"config": {"dataset": DATASET}},
                    "dataset_splits": {"config": {"dataset": DATASET, "folds": 2}},
                }
            },
            instance=instance,
        )
    assert result.success
    (mat,) = result.asset_materializations_for_node("dataset_release")
    try:
        yield z, {k: v.value for k, v in mat.metadata.items()}
    finally:
        server.stop()


@pytest.fixture
def dagster_ui(released_home) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """dagster-webserver on a free loopback port over that home; stopped (whole group) after."""
    z, _ = released_home
    port = free_port()
    env = {**os.environ, "MEDCURATE_HOME": str(z.home), "DAGSTER_HOME": str(z.dagster_home)}
    webserver = Path(sys.executable).parent / "dagster-webserver"
    cmd = [str(webserver), "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]
    log = open(z.home / "webserver.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until(lambda: _answers(url + "/server_info"), 90, interval=0.3)
        except WaitTimeout:
            tail = (z.home / "webserver.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"dagster-webserver did not answer (rc={proc.poll()}):\n{tail}")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _shown_as(key: str, label: str) -> bool:
    """The graph's zoomed-out nodes shorten long names to ``head…tail``."""
    if "…" not in label:
        return label == key
    head, tail = label.split("…", 1)
    return key.startswith(head) and key.endswith(tail) and len(head) + len(tail) < len(key)


def _words(markdown: str) -> str:
    """The first line of a markdown value as the page shows it: no markup, single spaces."""
    line = next((ln for ln in markdown.splitlines() if ln.strip(" |-")), "")
    return " ".join(re.sub(r"[#*`|_>\[\]]", " ", line).split())


def test_lineage_lists_every_asset_and_release_page_shows_metadata(  # type: ignore[no-untyped-def]
    dagster_ui, released_home, page, screenshots
) -> None:
    from pipelines.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    page.goto(dagster_ui + "/asset-groups")
    nodes = page.locator('[class*="AssetNode_assetName"]')

    def expanded() -> bool:
        """Alt+E, the graph's own shortcut, expands every group (a no-op until they load)."""
        if nodes.count() == 0:
            page.keyboard.press("Alt+KeyE")
            page.wait_for_timeout(1000)
        return nodes.count() == len(keys)

    wait_until(expanded, 90, interval=0.5, what="every asset node drawn")
    labels = [t.strip() for t in nodes.all_inner_texts()]
    unmatched = [k for k in keys if not any(_shown_as(k, label) for label in labels)]
    assert not unmatched, f"assets missing from the lineage graph: {sorted(unmatched)}"
    # for the pictures: the navigation folded to icons (remembered by the browser), the graph
    # fitted to a wide panel on a reload
    page.get_by_text("Hide navigation").click()
    page.set_viewport_size({"width": 1400, "height": 600})
    page.reload()
    wait_until(expanded, 90, interval=0.5, what="every asset node drawn again")
    page.wait_for_timeout(1000)  # edges settle after the nodes
    page.screenshot(path=screenshots / "dagster-lineage.png")

    _, md = released_home
    page.set_viewport_size({"width": 1920, "height": 1800})  # the page scrolls inside a panel
    page.goto(dagster_ui + "/assets/dataset_release")
    # every metadata key, the version id and the command a scientist copies
    expected = [*md, str(md["version_id"]), str(md["pull"])]
    if "card_summary" in md:  # the dataset card, shown inline (issue 14)
        expected.append(_words(str(md["card_summary"])))

    def missing() -> list[str]:
        text = " ".join(page.inner_text("body").split())
        return [e for e in expected if e not in text]

    with contextlib.suppress(WaitTimeout):
        wait_until(lambda: not missing(), 60, interval=0.5, what="the release's metadata")
    gone = missing()
    assert not gone, f"not shown on the release page: {gone}"
    plots = page.locator("table img")  # the plots in the metadata (balance_plot), inline
    assert plots.count() >= 1
    loaded = "i => i.complete && i.naturalWidth > 0"
    with contextlib.suppress(WaitTimeout):
        wait_until(lambda: all(p.evaluate(loaded) for p in plots.all()), 30, what="plots load")
    broken = [p.get_attribute("alt") for p in plots.all() if not p.evaluate(loaded)]
    assert not broken, f"plots that did not load: {broken}"
    page.screenshot(path=screenshots / "dagster-release.png")
