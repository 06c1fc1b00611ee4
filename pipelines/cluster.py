"""The cluster profile's executor: Dagster's Celery executor, with queues per resource kind and a
Dagster retry for a step whose worker died.

Selected by configuration only (the code location asks :func:`executor_for_profile` with the
profile of DAGSTER_HOME's dagster.yaml, written by ``medcurate profile cluster``); asset code is
the same under both profiles. What this adds to ``dagster_celery.celery_executor``:

- **Queues per resource kind.** A step's queue follows the resources its op requires: steps that
  talk to Label Studio go to queue ``labelstudio``, those that talk to a PACS to ``pacs``, the
  rest to Dagster's default ``dagster``. Workers choose which queues they serve, so one worker
  slot on ``labelstudio`` means Label Studio never sees more than one step at a time however many
  workers compute. An explicit ``dagster-celery/queue`` op tag still wins.
- **A dead worker is a step failure.** dagster-celery turns a task whose worker process died
  (SIGKILL, the OOM killer) into an error of the whole run. Here it becomes the step's failure,
  handled the way the multiprocess executor handles a crashed child: under the job's
  ``op_retry_policy`` the step is up for retry and is sent to the queue again (another worker
  takes it; the outputs are rewritten whole, so a retried step leaves the same bytes).
- Broker and result backend come from the environment (``MEDCURATE_CELERY_BROKER`` /
  ``MEDCURATE_CELERY_BACKEND``, :func:`medcurate.services.redis.client_env`): the password never
  reaches run config or the run storage.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping
from typing import Any

import dagster as dg
from celery.exceptions import TaskRevokedError
from dagster._core.execution.retries import RetryMode
from dagster._utils.error import serializable_error_info_from_exc_info
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor, _submit_task
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG
from dagster_shared.serdes import serialize_value

BROKER_VAR = "MEDCURATE_CELERY_BROKER"  # = medcurate.services.redis.BROKER_VAR (no import)
BACKEND_VAR = "MEDCURATE_CELERY_BACKEND"
DEFAULT_QUEUE = "dagster"
#: resource key an op requires -> the queue its steps go to (the first match wins)
QUEUE_BY_RESOURCE: Mapping[str, str] = {
    "labelstudio": "labelstudio",
    "pacs": "pacs",
    "research_pacs": "pacs",
}
QUEUES = (DEFAULT_QUEUE, "labelstudio", "pacs")
#: a step whose worker died is run again up to twice (a third death fails the run)
RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=1)
#: how often the orchestrating process polls its steps' Celery results (dagster-celery: 1 s)
POLL_SECONDS = 0.1
#: Celery settings beyond dagster-celery's defaults
CELERY_SETTINGS: Mapping[str, Any] = {
    "broker_connection_retry_on_startup": True,
    "result_expires": 24 * 3600,
    "worker_hijack_root_logger": False,
    "worker_send_task_events": False,
}
# dagster-celery registers its one task again at each submission; Celery warns once, harmlessly
warnings.filterwarnings("ignore", message=r"(?s).*The new callable was not registered")


def queue_for(required_resources: set[str] | frozenset[str], tags: Mapping[str, str]) -> str:
    """The Celery queue of a step: its explicit tag, else the queue of the first resource kind
    it requires, else the default queue."""
    if DAGSTER_CELERY_QUEUE_TAG in tags:
        return tags[DAGSTER_CELERY_QUEUE_TAG]
    for resource, queue in QUEUE_BY_RESOURCE.items():
        if resource in required_resources:
            return queue
    return DEFAULT_QUEUE


class _WorkerLostAsFailure:
    """A step's Celery result, whose failure to deliver the step's events (its worker died, the
    task failed outside Dagster's step code) becomes the step's failure or retry event."""

    def __init__(self, result: Any, executor: CeleryExecutor, step_context: Any, known: Any):
        self._result = result
        self._executor = executor
        self._step_context = step_context
        self._known = known

    def ready(self) -> bool:
        return bool(self._result.ready())

    def revoke(self) -> None:
        self._result.revoke()

    def get(self) -> list[str]:
        try:
            return list(self._result.get())
        except TaskRevokedError:
            raise
        except Exception:
            error = serializable_error_info_from_exc_info(sys.exc_info())
            event = self._executor.log_failure_or_retry_event_after_error(
                self._step_context, error, self._known
            )
            return [serialize_value(event)]


class MedcurateCeleryExecutor(CeleryExecutor):
    """dagster-celery's executor with queues by resource kind and worker deaths as step failures."""

    def execute(self, plan_context: Any, execution_plan: Any) -> Any:
        from dagster_celery import core_execution_loop
        from dagster_celery.core_execution_loop import core_celery_execution_loop

        # the loop sleeps this long between polls of its tasks: each step of a chain waited up
        # to a second for the one before it to be seen done (~40 steps in the demo's chain)
        core_execution_loop.TICK_SECONDS = POLL_SECONDS  # type: ignore[assignment]

        job_def = plan_context.job.get_definition()

        def submit(
            app: Any, ctx: Any, step: Any, queue: str, priority: int, known_state: Any
        ) -> _WorkerLostAsFailure:
            node = job_def.get_node(step.node_handle)
            required = set(node.definition.required_resource_keys)
            routed = queue_for(required, step.tags)
            if routed != queue:  # the loop's "Submitting ... to queue" line named the default
                ctx.log.info(f'Step "{step.key}" goes to queue "{routed}" (its resources).')
            result = _submit_task(app, ctx, step, routed, priority, known_state)
            return _WorkerLostAsFailure(result, self, ctx.for_step(step), known_state)

        return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)


@dg.executor(
    name="medcurate_celery",
    config_schema=CELERY_CONFIG,
    requirements=dg.multiple_process_executor_requirements(),
)
def medcurate_celery_executor(init_context: dg.InitExecutorContext) -> MedcurateCeleryExecutor:
    cfg = init_context.executor_config
    extra: dict[str, Any] = dict(cfg.get("config_source") or {})  # type: ignore[call-overload]
    return MedcurateCeleryExecutor(
        broker=cfg.get("broker"),
        backend=cfg.get("backend"),
        config_source={**CELERY_SETTINGS, **extra},
        include=cfg.get("include"),
        retries=RetryMode.from_config(cfg["retries"]),  # type: ignore[arg-type]
    )


#: the executor of the cluster profile: broker and backend read from the environment
cluster_executor = medcurate_celery_executor.configured(
    {"broker": {"env": BROKER_VAR}, "backend": {"env": BACKEND_VAR}},
    name="medcurate_celery_cluster",
)


def executor_for_profile(profile: str) -> dg.ExecutorDefinition | None:
    """The Celery executor for ``cluster``; None (Dagster's default) for ``local``."""
    return cluster_executor if profile == "cluster" else None


def retry_policy_for_profile(profile: str) -> dg.RetryPolicy | None:
    """Steps are retried under ``cluster`` (workers die); locally a failure is final at once."""
    return RETRY_POLICY if profile == "cluster" else None
