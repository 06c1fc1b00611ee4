"""The round assets through Dagster against the real Label Studio: annotation_tasks[round] ->
simulated annotators -> the round sensor notices -> annotations[round] -> consensus_labels, with
samples that disagree sent to an adjudication project whose reviewer's labels win."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from annotation.client import LabelStudioClient
from annotation.simulate import simulate_round, truth_for_volume, truth_index
from annotation.tasks import choice_result
from assets.annotation import annotation_tasks, annotations, consensus_labels
from assets.resources import DeidSecrets, LabelStudioResource, MedcurateHome
from medcurate.services.labelstudio import ServicePaths

pytestmark = pytest.mark.integration
RK = "round-52"


def _sensor(instance: dg.DagsterInstance, resources: dict) -> dg.SensorResult:  # type: ignore[type-arg]
    from pipelines.definitions import defs
    from pipelines.sensors import round_sensor

    ctx = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
    result = round_sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    targets = {t.job_name for t in round_sensor.targets}  # the daemon refuses untargeted runs
    assert all(r.job_name in targets for r in result.run_requests or [])
    return result


@pytest.mark.slow
def test_round_assets_sensor_and_adjudication(labelstudio, annotation_cohort, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    z, truth, salt = annotation_cohort
    monkeypatch.setenv("MEDCURATE_HOME", str(z.home))
    monkeypatch.setenv("MEDCURATE_DEID_SALT", salt.decode())
    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.api_key)
    resources = {
        "home": MedcurateHome(home=str(z.home)),
        "secrets": DeidSecrets(),
        "labelstudio": LabelStudioResource(),
    }
    assets = [annotation_tasks, annotations, consensus_labels]
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("round", [RK])
    tasks_cfg = {
        "ops": {"annotation_tasks": {"config": {"n_samples": 4, "every": 3, "annotators": 2}}}
    }

    def run(selection, partition=None, config=None):  # type: ignore[no-untyped-def]
        result = dg.materialize(
            assets, selection=selection, partition_key=partition, instance=instance,
            resources=resources, run_config=config or {},
        )  # fmt: skip
        assert result.success
        (mat,) = result.asset_materializations_for_node(selection[0])
        return mat.metadata

    monkeypatch.setenv("MEDCURATE_DAGSTER_URL", "http://127.0.0.1:3999")
    md = run(["annotation_tasks"], RK, tasks_cfg)
    assert (md["samples"].value, md["tasks"].value, md["tasks_imported"].value) == (4, 12, 12)
    # no model output for this round: said so, and the tasks carry no pre-annotation
    assert md["pre_annotations"].value.startswith("none: annotation_model has not run")
    assert md["with_pre_annotations"].value == 0
    project_id = md["project_id"].value
    assert isinstance(md["project_url"], dg.UrlMetadataValue)
    assert md["project_url"].value == f"{labelstudio.url}/projects/{project_id}/data"
    project = LabelStudioClient(labelstudio.url, labelstudio.api_key).project(project_id)
    back = f"http://127.0.0.1:3999/assets/annotation_tasks?view=partitions&partition={RK}"
    assert back in project["description"] and project["show_instruction"] is True
    assert "unreadable" in project["expert_instruction"]
    md = run(["annotation_tasks"], RK, tasks_cfg)  # re-materialized: nothing new
    assert (md["tasks_imported"].value, md["tasks_already_there"].value) == (0, 12)
    assert md["project_created"].value is False
    info = json.loads(z.round_info(RK).read_text())
    assert info["title"] == "medcurate round-52" and info["annotators"] == 2

    assert _sensor(instance, resources).run_requests == []  # nobody has labelled yet

    volumes = pd.read_parquet(z.volumes_table)
    index = truth_index(truth, salt)
    truths = {
        r["sample_id"]: truth_for_volume(r, index, truth, z.volumes / r["nifti_path"])
        for r in volumes[volumes["sample_id"].isin(info["samples"])].to_dict("records")
    }
    secrets_file = ServicePaths(z.home).sim_annotators_file
    api = LabelStudioClient(labelstudio.url, labelstudio.api_key)
    simulate_round(
        api, info["project_id"], truths, 2, "moderate",  # type: ignore[arg-type]
        secrets_file, seed=3,
    )  # fmt: skip

    (request,) = _sensor(instance, resources).run_requests
    assert request.partition_key == RK and request.job_name == "round_export"
    md = run(["annotations"], RK)
    assert (md["annotations"].value, md["tasks_complete"].value) == (24, 12)
    assert md["tasks"].value == 12  # complete: the sensor compares these with the run key
    assert md["round_key"].value == f"{RK}-project-{info['project_id']}-tasks-12"
    follow_up = _sensor(instance, resources).run_requests
    consensus_request = next(r for r in follow_up if r.partition_key is None)
    assert consensus_request.job_name == "consensus_and_release"

    strict = {"ops": {"consensus_labels": {"config": {"min_dice": 1.01}}}}
    md = run(["consensus_labels"], None, strict)
    assert md["rounds"].value[RK]["pending_adjudication"] >= 1
    adj = json.loads(z.round_adjudication(RK).read_text())
    adj_tasks = api.tasks(adj["project_id"])
    assert adj_tasks and all(len(t["predictions"]) == 2 for t in adj_tasks)
    versions = {p["model_version"] for t in adj_tasks for p in t["predictions"]}
    labels = pd.read_parquet(z.labels_table)
    mine = labels[labels["source_round"] == RK].set_index("sample_id")
    assert set(versions) <= set(pd.read_parquet(z.round_annotations(RK))["annotator"])
    assert set(mine.index) == set(info["samples"])

    # the reviewer decides one sample: every slice normal; that verdict wins
    target = sorted(adj["samples"])[0]
    assert mine.loc[target, "pending_adjudication"]
    import requests

    for t in adj_tasks:
        if t["data"]["sample_id"] == target:
            resp = requests.post(
                f"{labelstudio.url}/api/tasks/{t['id']}/annotations/",
                json={"result": [choice_result("normal")], "lead_time": 2.0},
                headers={"Authorization": f"Token {labelstudio.api_key}"},
                timeout=30,
            )
            resp.raise_for_status()
    md = run(["consensus_labels"], None, strict)
    assert md["adjudicated_samples"].value >= 1
    assert len(api.tasks(adj["project_id"])) == len(adj_tasks)  # no duplicate review tasks
    labels = pd.read_parquet(z.labels_table).set_index("sample_id")
    row = labels.loc[target]
    assert row["adjudicated"] and not row["pending_adjudication"]
    assert row["label"] == "normal" and pd.isna(row["mask_path"])
    others = labels[(labels["source_round"] == RK) & (labels.index != target)]
    for sid, r in others.iterrows():
        # still waiting for the reviewer, or settled by the annotators: then right
        assert r["pending_adjudication"] or r["label"] == truths[sid].label  # type: ignore[union-attr]
        if r["label"] == "abnormal":
            assert (z.labels / r["mask_path"]).exists()
    assert not (z.label_masks / f"{target}.nii.gz").exists()
    assert np.isfinite(md["kappa"].value)
