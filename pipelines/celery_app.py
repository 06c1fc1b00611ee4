"""The Celery app a cluster worker runs (``celery -A pipelines.celery_app worker``).

Built from the same settings as the executor of :mod:`pipelines.cluster`, so the orchestrating
process and the workers agree on broker, result backend, queues and task names; the broker and
backend URLs come from the worker's environment (``MEDCURATE_CELERY_BROKER`` /
``MEDCURATE_CELERY_BACKEND``). The task loads the step's job from the code location named in the
task itself (``pipelines.definitions``). That module is imported here too, once, in the worker's
main process: its pool processes are forked with it loaded, so neither the first step of a pool
process nor the one that replaces a killed pool process pays the import (torch, MONAI, GX).
"""

import multiprocessing
import os

from celery.signals import worker_process_init
from dagster._core.execution.retries import RetryMode
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

import pipelines.definitions  # noqa: F401  (preloaded for the pool, see above)
from pipelines.cluster import BACKEND_VAR, BROKER_VAR, CELERY_SETTINGS, MedcurateCeleryExecutor

_executor = MedcurateCeleryExecutor(
    retries=RetryMode(RetryMode.DISABLED),
    broker=os.environ.get(BROKER_VAR),
    backend=os.environ.get(BACKEND_VAR),
    config_source=dict(CELERY_SETTINGS),
)

app = make_app(_executor.app_args())
execute_plan = create_task(app)


@worker_process_init.connect
def allow_process_pools(**_: object) -> None:
    """Let a step start its own process pool (de-identification, normalization and ingest fork
    workers when a batch repays them): Celery's pool processes are daemonic, and Python refuses
    children to a daemonic process. A pool process that dies still takes its step down with it;
    the step's own pool is closed by the step's ``with`` block or dies with it."""
    multiprocessing.current_process()._config.pop("daemon", None)  # type: ignore[attr-defined]
