"""Every round's Label Studio project carries the annotators' instructions and a description
that links back to Dagster; an older project gets them, and an up-to-date one is left alone."""

from __future__ import annotations

from typing import Any

import pytest

from annotation.client import LabelStudioClient
from annotation.instructions import (
    ADJUDICATION_INSTRUCTION_HTML,
    DEFAULT_DAGSTER_URL,
    INSTRUCTION_HTML,
    dagster_asset_url,
    dagster_url,
    labelstudio_project_url,
    project_description,
    project_instruction,
)
from annotation.label_config import LABEL_CONFIG


def test_links_to_dagster_and_label_studio() -> None:
    assert dagster_url({}) == DEFAULT_DAGSTER_URL == "http://127.0.0.1:3000"
    assert dagster_url({"MEDCURATE_DAGSTER_URL": "http://h:3001/"}) == "http://h:3001"
    url = dagster_asset_url("annotation_tasks", "round-1", base="http://127.0.0.1:3000/")
    # the Dagster 1.13 UI opens an asset's partition with ?view=partitions&partition=<key>
    assert url == "http://127.0.0.1:3000/assets/annotation_tasks?view=partitions&partition=round-1"
    assert (
        dagster_asset_url("consensus_labels", base="http://d") == "http://d/assets/consensus_labels"
    )
    assert labelstudio_project_url("http://127.0.0.1:8080/", 7) == (
        "http://127.0.0.1:8080/projects/7/data"
    )
    assert project_description("annotation round-1", url).endswith(url)


def test_instructions_say_what_an_annotator_needs() -> None:
    text = INSTRUCTION_HTML.lower()
    sides = "patient's <b>right</b> is on the\n<b>left</b>"
    for needed in ("lesion", "normal", "abnormal", "unreadable", "radiological", sides,
                   "pre-annotation", "score"):  # fmt: skip
        assert needed in text, needed
    linked = project_instruction("http://d/assets/a?view=partitions&partition=round-1")
    assert linked.startswith(INSTRUCTION_HTML)
    assert 'href="http://d/assets/a?view=partitions&amp;partition=round-1"' in linked


class _NoUpdates:
    """Wraps the SDK's projects so any update fails the test."""

    def __init__(self, projects: Any) -> None:
        self._projects = projects

    def update(self, **kwargs: Any) -> Any:
        raise AssertionError(f"an up-to-date project was updated: {sorted(kwargs)}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._projects, name)


class _SdkNoUpdates:
    def __init__(self, sdk: Any) -> None:
        self._sdk = sdk
        self.projects = _NoUpdates(sdk.projects)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sdk, name)


@pytest.mark.integration
def test_projects_carry_instructions_and_a_link_back(labelstudio, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = LabelStudioClient(labelstudio.url, labelstudio.api_key)
    z_root = labelstudio.home / "annotation" / "round-71"
    z_root.mkdir(parents=True, exist_ok=True)
    asset = dagster_asset_url("annotation_tasks", "round-71", base="http://127.0.0.1:3000")
    description = project_description("annotation round-71", asset)
    instruction = project_instruction(asset)

    pid, created = client.ensure_project(
        "medcurate round-71", 2, z_root, description=description, instruction=instruction
    )
    stored = client.project(pid)
    assert created and stored["show_instruction"] is True
    assert stored["expert_instruction"] == instruction  # the sanitizer kept every byte
    assert stored["description"] == description and asset in stored["description"]
    assert client.project_url(pid) == f"{labelstudio.url}/projects/{pid}/data"

    # up to date: nothing is sent again
    watched = LabelStudioClient(labelstudio.url, labelstudio.api_key)
    watched._sdk = _SdkNoUpdates(watched.sdk())
    again, created = watched.ensure_project(
        "medcurate round-71", 2, z_root, description=description, instruction=instruction
    )
    assert (again, created) == (pid, False)

    # a project made before instructions (and the context strip) existed gets both
    before = LABEL_CONFIG.replace('  <Image name="context" value="$context"/>\n', "")
    assert before != LABEL_CONFIG
    old = client.create_project("medcurate round-72", config=before, instruction="")
    client.sdk().projects.update(id=old, show_instruction=False, expert_instruction="")
    same, created = client.ensure_project("medcurate round-72", 3, z_root, known_id=old)
    stored = client.project(old)
    assert (same, created) == (old, False)
    assert stored["expert_instruction"] == INSTRUCTION_HTML and stored["show_instruction"] is True
    assert stored["maximum_annotations"] == 3
    assert 'name="context"' in stored["label_config"]

    # the adjudication project's own text survives the sanitizer too
    consensus = dagster_asset_url("consensus_labels")
    review = project_instruction(consensus, ADJUDICATION_INSTRUCTION_HTML)
    adj, _ = client.ensure_project("medcurate round-71 adjudication", 1, z_root, instruction=review)
    assert client.project(adj)["expert_instruction"] == review
