"""Build and load embedding models from plain-typed configs and checkpoints.

Two checkpoint layouts load, both with ``torch.load(weights_only=True)``:

* a model file written by ``encoder.save(path)``: ``{"config": {...}, "state_dict": {...}}``;
* a Lightning checkpoint of :class:`~rsretrieve.training.task.CrossSensorTask`: the model config under
  ``checkpoint["rsretrieve"]["model_config"]`` and the weights under ``state_dict`` with the prefix ``model.``.

    model = load_model("workspace/checkpoints/last.ckpt")
    v = model.embed("sentinel1", x)            # (B, 128)
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from rsretrieve.model.dual_encoder import DualEncoder
from rsretrieve.model.encoder import CrossSensorEncoder, check_spec
from rsretrieve.sensors.registry import get_sensor, sensor_dirs

log = logging.getLogger(__name__)

EmbeddingModel = CrossSensorEncoder | DualEncoder

_KINDS: dict[str, type[CrossSensorEncoder] | type[DualEncoder]] = {
    CrossSensorEncoder.kind: CrossSensorEncoder,
    DualEncoder.kind: DualEncoder,
}


def build_model(config: dict[str, Any]) -> EmbeddingModel:
    """An untrained model of ``config["kind"]`` (``ours`` or ``dual_encoder``) from its plain-typed config, once
    every sensor it has a branch for is registered with the spec facts it was trained with (``config["specs"]``;
    files of older versions without them, or without some of their fields, are not checked for those)."""
    kind = config.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(_KINDS)}")
    for name in config.get("sensors", []):
        try:
            get_sensor(name)
        except KeyError:  # a sensor added from a folder of RSRETRIEVE_SENSOR_DIRS that this shell does not name
            raise ValueError(f"the model has a branch for sensor {name!r}, which is not registered (no spec of it in "
                             f"{os.pathsep.join(str(d) for d in sensor_dirs())}): set RSRETRIEVE_SENSOR_DIRS to the "
                             "folder of its YAML spec, as when it was trained") from None
    for name, facts in config.get("specs", {}).items():
        check_spec(name, facts)
    return _KINDS[kind].from_config(config)


def model_state(checkpoint: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, state_dict)`` of a model file or of a Lightning checkpoint of the training task."""
    if "config" in checkpoint and "state_dict" in checkpoint:
        return checkpoint["config"], checkpoint["state_dict"]
    meta = checkpoint.get("rsretrieve")
    if meta is None or "state_dict" not in checkpoint:
        raise ValueError("not an rsretrieve checkpoint: no model config ('config' or 'rsretrieve' entry)")
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    return meta["model_config"], state


class ModelFileError(ValueError):
    """A model file that is damaged or not a checkpoint (``reason``: why, in a few words)."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: not a readable model file or checkpoint ({reason}); restore it or train it again")
        self.path, self.reason = path, reason


def load_error_reason(e: BaseException) -> str:
    """A short reason for an exception of ``torch.load(..., weights_only=True)`` (its messages run to 10 lines)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if isinstance(e, pickle.UnpicklingError) and lines and lines[0].startswith("Weights only load failed"):
        after = [ln for i, ln in enumerate(lines) if i and "WeightsUnpickler error" in lines[i - 1]]
        return "not a weights-only torch file" + (f": {after[0]}" if after else "")
    if isinstance(e, EOFError):
        return "empty or truncated file"
    if isinstance(e, (KeyError, IndexError, TypeError, AttributeError)):  # the unpickler fed random bytes
        return f"not a torch file: {type(e).__name__} while unpickling"
    return lines[0][:200] if lines else type(e).__name__


def load_model(source: str | Path | dict[str, Any], map_location: str | torch.device = "cpu") -> EmbeddingModel:
    """Load a model (in eval mode) from a checkpoint path or an already loaded checkpoint dict.

    Raises:
        ValueError: (one line, naming the file) if the file is damaged or not a checkpoint, the checkpoint is not an
            rsretrieve one, or a sensor's spec changed since training.
    """
    if isinstance(source, dict):
        checkpoint = source
    else:
        try:
            checkpoint = torch.load(source, map_location=map_location, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError,
                AttributeError) as e:  # torch's text runs to 10 lines suggesting unsafe loading; random bytes
            log.debug("loading %s failed", source, exc_info=True)  # fail in the unpickler's own ways
            raise ModelFileError(source, load_error_reason(e)) from None
        if not isinstance(checkpoint, dict):
            raise ModelFileError(source, f"a torch file holding a {type(checkpoint).__name__}, not a checkpoint")
    try:
        config, state = model_state(checkpoint)
    except ValueError as e:
        raise ValueError(e.args[0] if isinstance(source, dict) else f"{source}: {e.args[0]}") from None
    try:
        model = build_model(config)
    except ValueError as e:
        raise ValueError(e.args[0] if isinstance(source, dict) else f"{source}: {e.args[0]}") from None
    missing, unexpected = _key_mismatch(model, state)
    if missing or unexpected:
        where = "the checkpoint" if isinstance(source, dict) else str(source)
        raise ValueError(f"{where} does not fit this version of the model code ({len(missing)} weights missing, "
                         f"{len(unexpected)} unexpected, e.g. {(missing or unexpected)[0]}); retrain it")
    model.load_state_dict(state)
    log.info("loaded %s model with sensors %s", config["kind"], ", ".join(config["sensors"]))
    return model.eval()


def _key_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """(missing, unexpected) weight names, shapes included: a checkpoint of another architecture."""
    own = model.state_dict()
    missing = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    unexpected = [k for k in state if k not in own]
    return missing, unexpected
