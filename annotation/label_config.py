"""The Label Studio labelling interface of an annotation round, and client-side validation.

Label Studio accepts predictions and annotations that do not match the project's config (it
stores them and the editor then shows nothing), so every pre-annotation is checked here, against
the same XML, before it is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

IMAGE = "image"  # the <Image> tag's name: the task data key and every result's to_name
FINDING = "finding"  # the <Choices> tag: one class per slice
LESION = "lesion"  # the <BrushLabels> tag: lesion masks
CHOICES = ("normal", "abnormal", "unreadable")
BRUSH_LABELS = ("lesion",)

CONTEXT = "context"  # the neighbour strip's <Image>: shown only, no control points to it
ORIENTATION = "orientation"  # task data: which patient side each image edge shows

# The orientation is text above the image (nothing is burned into pixels): "R | L  (A up)" says
# the image's left shows the patient's right and anterior is up (radiological convention).
LABEL_CONFIG = """<View>
  <Header value="$orientation" size="5"/>
  <Image name="image" value="$image" zoom="true" zoomControl="true"
         brightnessControl="true" contrastControl="true"/>
  <Choices name="finding" toName="image" choice="single-radio" required="true" showInline="true">
    <Choice value="normal"/>
    <Choice value="abnormal"/>
    <Choice value="unreadable"/>
  </Choices>
  <BrushLabels name="lesion" toName="image">
    <Label value="lesion" background="#ff3b30"/>
  </BrushLabels>
  <Header value="Neighbouring slices (lower slice index left; this slice framed)" size="6"/>
  <Image name="context" value="$context"/>
</View>
"""


class InvalidPrediction(ValueError):
    """A pre-annotation does not match the label config."""


@lru_cache(maxsize=8)
def _interface(config: str) -> Any:
    from label_studio_sdk.label_interface import LabelInterface

    return LabelInterface(config)


def prediction_errors(prediction: Mapping[str, Any], config: str = LABEL_CONFIG) -> list[str]:
    """Errors of a prediction against the config (empty when valid), via the SDK's own checker."""
    errors = _interface(config).validate_prediction(dict(prediction), return_errors=True)
    return [str(e) for e in errors] if isinstance(errors, list) else []


def check_prediction(prediction: Mapping[str, Any], config: str = LABEL_CONFIG) -> None:
    """Raise :class:`InvalidPrediction` with the reasons when a prediction does not fit."""
    errors = prediction_errors(prediction, config)
    if errors:
        raise InvalidPrediction("prediction does not match the label config: " + "; ".join(errors))
