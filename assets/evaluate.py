"""Asset: the evaluation consumer on the newest release, attached to its dataset card.

A thin wrapper over :func:`medcurate.evaluate.run.run_evaluation`: the release is read through
``medcurate.datasets.load`` like any scientist's script. Its WARN check reports subgroup gaps
(e.g. a site whose false-negative rate is far above the others') without blocking anything.
"""

import dagster as dg

from assets.resources import MedcurateHome
from assets.stage import checked, to_metadata
from medcurate.evaluate import EvaluationError
from medcurate.evaluate.run import EvaluateSettings, run_evaluation
from medcurate.store.objects import StoreError
from medcurate.store.run import DEFAULT_DATASET

GAP_CHECK = "subgroup_gaps_within_tolerance"


class EvaluationConfig(dg.Config):
    dataset: str = DEFAULT_DATASET
    version: str = "latest"
    store: str = ""  # fsspec URL of the release store; default MEDCURATE_HOME/releases
    preset: str = "small"  # small: minutes on a 2-core CPU; full: a GPU
    seed: int = 0


@dg.asset(
    deps=[dg.AssetKey("dataset_release")],
    group_name="evaluation",
    check_specs=[dg.AssetCheckSpec(GAP_CHECK, asset="baseline_evaluation", blocking=False)],
)
def baseline_evaluation(
    context: dg.AssetExecutionContext, config: EvaluationConfig, home: MedcurateHome
) -> dg.MaterializeResult:
    """Baseline classifier and UNet trained on train, measured on test with 95% CIs overall and
    per subgroup, Grad-CAM on test cases; the report becomes part of the release's card."""
    settings = EvaluateSettings(
        config.dataset, config.version, config.store, config.preset, config.seed
    )
    try:
        result = run_evaluation(home.zones(), settings)
    except (EvaluationError, StoreError) as exc:
        raise dg.Failure(f"evaluation failed: {exc}") from None
    context.log.info(result.summary_line())
    gaps = checked(
        result.problems,
        {"tolerance": result.evaluation.config.gap_tolerance},
        severity=dg.AssetCheckSeverity.WARN,
        check_name=GAP_CHECK,
    )
    return dg.MaterializeResult(metadata=to_metadata(result.metadata()), check_results=[gaps])
