"""A user's model as the stages read one: a copy that carries a ``spec``, the model handed in left as it was."""

from __future__ import annotations

import copy

from torch import nn

from ..errors import ModelError
from .points import num_outputs
from .structure import name_classifier


def adopt(model: nn.Module, *, image_shape: tuple[int, ...] | None = None, classifier: str | None = None) -> nn.Module:
    """A copy of ``model`` that carries a ``spec`` (what prune-snr's stages read of a model they built): the model's own
    for models prune-snr built, else one made from the model (a user's class: ``MODULE:CLASS``, its classifier's label
    count, ``image_shape``). The model handed in is left as it is (device, mode and weights).

    Raises:
        ModelError: a model without ``spec`` and no ``image_shape`` to say what it reads, or no findable classifier.
    """
    copied = copy.deepcopy(model)
    name_classifier(copied, classifier)
    if getattr(copied, "spec", None) is not None:
        if classifier:
            copied.spec = {**copied.spec, "classifier": classifier}
        return copied
    if image_shape is None:
        raise ModelError(f"{type(model).__name__} was not built by prune-snr: pass its data as train=/test= datasets")
    channels, height, width = image_shape
    cls = type(model)
    copied.spec = {
        "name": f"{cls.__module__}:{cls.__qualname__}",
        "num_classes": num_outputs(model),
        "input_size": height,
        "in_chans": channels,
        "input_shape": [channels, height, width],
        "user_model": True,
        **({"classifier": classifier} if classifier else {}),
    }
    return copied
