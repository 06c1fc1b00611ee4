"""The evaluation consumer: what a scientist does with a release, as part of the product.

It pulls a version through :func:`medcurate.datasets.load` (never from the zones), trains baseline
models (a slice classifier and a segmentation UNet), reports sensitivity, specificity, AUC and Dice
with bootstrap confidence intervals overall and per demographic subgroup, shows what the classifier
looked at (Grad-CAM), and attaches the report to the version's dataset card.
"""


class EvaluationError(RuntimeError):
    """The release cannot be evaluated as asked (a split of one class, an unknown preset)."""
