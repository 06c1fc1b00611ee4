"""The cluster profile's executor: queues by resource kind, the profile chosen by dagster.yaml
alone, and (against real Redis and two real Celery workers) a step that needs Label Studio runs
on the one worker serving that queue, and a step whose worker process is SIGKILLed is retried by
Dagster instead of failing the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster import DagsterEventType
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

from medcurate import profiles
from medcurate.config import Zones
from medcurate.services import redis, workers
from pipelines import cluster

REPO = Path(__file__).resolve().parents[2]
JOBS_MODULE = "medcurate_cluster_test_jobs"


# --------------------------------------------------------------------------- unit


@pytest.mark.parametrize(
    ("resources", "tags", "queue"),
    [
        ({"labelstudio", "home"}, {}, "labelstudio"),
        ({"pacs"}, {}, "pacs"),
        ({"research_pacs", "home"}, {}, "pacs"),
        ({"home", "secrets"}, {}, "dagster"),
        (set(), {}, "dagster"),
        ({"labelstudio"}, {DAGSTER_CELERY_QUEUE_TAG: "gpu"}, "gpu"),  # an explicit tag wins
        (set(), {DAGSTER_CELERY_QUEUE_TAG: "pacs"}, "pacs"),
    ],
)
def test_queue_follows_the_resources_a_step_requires(
    resources: set[str], tags: dict[str, str], queue: str
) -> None:
    assert cluster.queue_for(resources, tags) == queue
    assert cluster.queue_for(frozenset(resources), tags) == queue


def test_the_executor_and_retry_policy_follow_the_profile() -> None:
    assert cluster.executor_for_profile("cluster") is cluster.cluster_executor
    assert cluster.cluster_executor.name == "medcurate_celery_cluster"
    assert cluster.executor_for_profile("local") is None
    assert cluster.retry_policy_for_profile("cluster") is cluster.RETRY_POLICY
    assert cluster.RETRY_POLICY.max_retries >= 1
    assert cluster.retry_policy_for_profile("local") is None
    # every queue a step can be routed to by resources is one the workers know
    assert set(cluster.QUEUE_BY_RESOURCE.values()) | {cluster.DEFAULT_QUEUE} == set(cluster.QUEUES)
    assert set(workers.queues_for(1)) == set(cluster.QUEUES)


_LOAD = textwrap.dedent(
    """
    import json
    import pipelines.definitions as d
    jobs = {}
    for job in d.defs.resolve_all_job_defs():
        if job.name.startswith("__"):
            continue
        policy = job.op_retry_policy
        jobs[job.name] = [policy.max_retries if policy else None, job.executor_def.name]
    print(json.dumps(jobs))
    """
)


def _jobs_under(dagster_home: Path) -> dict[str, list[object]]:
    """The code location's jobs as loaded by a fresh interpreter with this DAGSTER_HOME (the
    profile is read once, at import): name -> [retries, executor name]."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env["DAGSTER_HOME"] = str(dagster_home)
    out = subprocess.run(
        [sys.executable, "-c", _LOAD],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.slow
def test_the_code_location_uses_celery_and_retries_only_under_the_cluster_profile(
    tmp_path: Path,
) -> None:
    cluster_home = tmp_path / "cluster" / "dagster"
    profiles.write_cluster_profile(cluster_home, host="127.0.0.1", port=5433, username="u")
    local_home = tmp_path / "local" / "dagster"
    profiles.write_local_profile(local_home)

    on_cluster = _jobs_under(cluster_home)
    assert "ingest_batch" in on_cluster and "consensus_and_release" in on_cluster
    for name, (retries, executor) in on_cluster.items():
        assert (retries, executor) == (
            cluster.RETRY_POLICY.max_retries,
            "medcurate_celery_cluster",
        ), name

    on_local = _jobs_under(local_home)
    assert set(on_local) == set(on_cluster)
    for name, (retries, executor) in on_local.items():
        assert retries is None, name
        assert executor != "medcurate_celery_cluster", name


# --------------------------------------------------------------------------- real workers

_JOBS_SOURCE = textwrap.dedent(
    """
    '''A tiny code location for tests/pipelines/test_cluster.py (written at test time).'''
    import os
    import time

    import dagster as dg

    from pipelines.cluster import RETRY_POLICY, cluster_executor


    class LabelStudioStub(dg.ConfigurableResource):
        def ping(self) -> int:
            return 1


    class AConfig(dg.Config):
        seconds: float = 0.0
        pid_file: str = ""


    @dg.asset
    def a(config: AConfig) -> int:
        if config.pid_file:
            with open(config.pid_file, "a") as f:
                f.write(f"{os.getpid()}\\n")
        time.sleep(config.seconds)
        return 1


    @dg.asset
    def b(a: int, labelstudio: LabelStudioStub) -> int:
        return a + labelstudio.ping()


    defs = dg.Definitions(
        assets=[a, b],
        resources={"labelstudio": LabelStudioStub()},
        executor=cluster_executor,
        jobs=[dg.define_asset_job("j", selection=[a, b], op_retry_policy=RETRY_POLICY)],
    )


    def resolved_job(name: str) -> dg.JobDefinition:
        return defs.resolve_job_def(name)
    """
)


class Cluster:
    """Redis, two workers and an sqlite Dagster instance in one temporary home."""

    def __init__(self, home: Path, instance: dg.DagsterInstance, pool: list[workers.Worker]):
        self.home, self.instance, self.workers = home, instance, pool

    def run(self, config: dict[str, object]) -> dg.ExecuteJobResult:
        recon = dg.build_reconstructable_job(
            JOBS_MODULE, "resolved_job", reconstructable_args=("j",)
        )
        return dg.execute_job(
            recon,
            instance=self.instance,
            run_config={"ops": {"a": {"config": config}}},
            raise_on_error=False,
        )

    def step_events(self, run_id: str, step: str) -> list[dg.EventLogEntry]:
        return [
            e
            for e in self.instance.all_logs(run_id)
            if e.dagster_event is not None and e.dagster_event.step_key == step
        ]


@pytest.fixture
def celery_cluster(
    zones_tmp: Zones, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cluster]:
    home = zones_tmp.home
    dagster_home = home / "dagster"
    profiles.write_local_profile(dagster_home)  # sqlite: shared by processes of one machine
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{JOBS_MODULE}.py").write_text(_JOBS_SOURCE)
    # not first on sys.path: Dagster's module loader drops sys.path[0] (the script's folder)
    monkeypatch.setattr(sys, "path", [sys.path[0], str(code), *sys.path[1:]])
    # workers.start puts the repository root before the caller's PYTHONPATH (it drops a
    # PYTHONPATH given in ``env``): the test module's folder goes through os.environ as well
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(code), os.environ.get("PYTHONPATH")) if p)
    )
    try:
        redis.start(home)
        broker = redis.client_env(home)
        for key, value in broker.items():
            monkeypatch.setenv(key, value)
        pool = workers.start(2, home, env={**broker, "PYTHONPATH": str(code)})
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            yield Cluster(home, instance, pool)
    finally:
        workers.stop(home)
        redis.stop(home)


class StepKiller(threading.Thread):
    """SIGKILLs the process running ``step`` of the first new run, once, a second after the
    step started (as the OOM killer would)."""

    def __init__(self, instance: dg.DagsterInstance, step: str, old_runs: set[str]) -> None:
        super().__init__(daemon=True)
        self.instance, self.step, self.old_runs = instance, step, old_runs
        self.killed: int | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set() and self.killed is None:
            for run in self.instance.get_runs():
                if run.run_id in self.old_runs:
                    continue
                for e in self.instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START):
                    assert e.dagster_event is not None
                    if e.dagster_event.step_key == self.step and e.dagster_event.pid:
                        time.sleep(1)
                        os.kill(e.dagster_event.pid, signal.SIGKILL)
                        self.killed = e.dagster_event.pid
                        return
            time.sleep(0.1)


def _pid_of(event: dg.EventLogEntry) -> int:
    assert event.dagster_event is not None and event.dagster_event.pid is not None
    return event.dagster_event.pid


def _succeeded(result: dg.ExecuteJobResult) -> set[str]:
    return {str(e.step_key) for e in result.get_step_success_events()}


def _types(events: list[dg.EventLogEntry]) -> list[str]:
    return [e.dagster_event.event_type_value for e in events if e.dagster_event is not None]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.filterwarnings("ignore:Task name 'execute_plan' is already registered")
def test_steps_are_routed_by_resource_and_a_killed_worker_is_retried(
    celery_cluster: Cluster, tmp_path: Path
) -> None:
    c = celery_cluster
    w1, w2 = c.workers
    assert w1.queues == ("dagster", "labelstudio", "pacs") and w2.queues == ("dagster",)

    # 1. step b requires "labelstudio": it goes to that queue, which only worker 1 serves
    with c.run({"seconds": 0.0}) as result:
        assert result.success
        assert _succeeded(result) == {"a", "b"}
        run_id = result.run_id
    [b_start] = [
        e for e in c.step_events(run_id, "b") if _types([e]) == [DagsterEventType.STEP_START.value]
    ]
    assert _pid_of(b_start) in w1.pool_pids()
    assert _pid_of(b_start) not in w2.pool_pids()
    messages = [e.user_message for e in c.instance.all_logs(run_id)]
    assert any('Step "b" goes to queue "labelstudio"' in m for m in messages)
    assert not any('Step "a" goes to queue' in m for m in messages)  # a: the default queue

    # 2. the process running step a is SIGKILLed mid-step: Dagster retries the step elsewhere
    pools_before = {w.index: w.pool_pids() for w in c.workers}
    pid_file = tmp_path / "a.pids"
    killer = StepKiller(c.instance, "a", {r.run_id for r in c.instance.get_runs()})
    killer.start()
    try:
        with c.run({"seconds": 4.0, "pid_file": str(pid_file)}) as result:
            assert result.success
            assert _succeeded(result) == {"a", "b"}
            run_id = result.run_id
    finally:
        killer.done.set()
        killer.join(10)
    assert killer.killed is not None
    types = _types(c.step_events(run_id, "a"))
    retry = types.index(DagsterEventType.STEP_UP_FOR_RETRY.value)
    restarted = types.index(DagsterEventType.STEP_RESTARTED.value, retry)
    assert DagsterEventType.STEP_SUCCESS.value in types[restarted:]
    assert DagsterEventType.STEP_FAILURE.value not in types
    # the step ran twice: first in the killed process, then in another one
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2 and pids[0] == killer.killed and pids[1] != killer.killed
    # the killed process was a worker's pool process; that worker got a new one
    [victim] = [w for w in c.workers if killer.killed in pools_before[w.index]]
    workers.wait_idle(victim)
    assert victim.pool_pids() and killer.killed not in victim.pool_pids()
    assert {w.index for w in workers.running(c.home)} == {1, 2}
