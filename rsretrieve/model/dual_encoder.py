"""The plain dual-encoder baseline: one small CNN per sensor, global pooling, a linear projection.

Nothing is shared between sensors but the temperature: no wavelength embedding, no shared head, no learned metric
beyond each tower's own projection. Trained with symmetric InfoNCE only, it is the bar the cross-sensor encoder has
to beat. It offers the same interface as :class:`~rsretrieve.model.encoder.CrossSensorEncoder` (``project``,
``embed``, ``logit_scale``, ``config``, ``save``), so the training task, evaluation and index treat both alike.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsretrieve.model.encoder import save_atomic, spec_fingerprint
from rsretrieve.sensors.registry import get_sensor


def _tower(in_channels: int, width: int, embed_dim: int) -> nn.Sequential:
    """Three stride-2 conv-BN-ReLU blocks, global average pooling and a linear projection."""
    layers: list[nn.Module] = []
    chans = [in_channels, width, 2 * width, 2 * width]
    for cin, cout in zip(chans[:-1], chans[1:]):
        layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chans[-1], embed_dim)]
    return nn.Sequential(*layers)


class DualEncoder(nn.Module):
    """One CNN tower per sensor and a shared learned temperature.

    Args:
        sensors: registered sensor names.
        embed_dim: width ``E`` of the exported vectors.
        width: channels of each tower's first block.
        temperature: initial temperature.
    """

    kind = "dual_encoder"

    def __init__(self, sensors: list[str], embed_dim: int = 128, width: int = 32, temperature: float = 0.07):
        super().__init__()
        if not sensors:
            raise ValueError("an encoder needs at least one sensor")
        self.embed_dim, self.width, self.temperature_init = embed_dim, width, temperature
        self.towers = nn.ModuleDict({s: _tower(get_sensor(s).num_bands, width, embed_dim) for s in sensors})
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    @property
    def sensors(self) -> list[str]:
        """Sensor names."""
        return list(self.towers.keys())

    @property
    def logit_scale(self) -> Tensor:
        """``1 / tau`` (clamped to 100)."""
        return self.log_logit_scale.clamp(max=math.log(100.0)).exp()

    def project(self, sensor: str, x: Tensor) -> Tensor:
        """Projection before normalisation: ``(B, C, H, W)`` -> ``(B, E)``."""
        if sensor not in self.towers:
            raise KeyError(f"no tower for sensor {sensor!r}; the encoder has {', '.join(self.sensors)}")
        return self.towers[sensor](x)

    def project_many(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """:meth:`project` of each sensor's batch (the towers share nothing to batch together)."""
        return {s: self.project(s, x) for s, x in inputs.items()}

    def embed(self, sensor: str, x: Tensor) -> Tensor:
        """Exported unit vectors ``(B, E)``."""
        return F.normalize(self.project(sensor, x), dim=-1)

    def forward(self, sensor: str, x: Tensor) -> Tensor:
        """Same as :meth:`embed`."""
        return self.embed(sensor, x)

    def config(self) -> dict[str, Any]:
        """Plain-typed constructor arguments (for checkpoints)."""
        return {"kind": self.kind, "sensors": self.sensors, "embed_dim": self.embed_dim, "width": self.width,
                "temperature": self.temperature_init,
                "specs": {name: spec_fingerprint(get_sensor(name)) for name in self.sensors}}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DualEncoder:
        """Build an (untrained) baseline from :meth:`config` (:func:`rsretrieve.model.checkpoint.build_model`
        checks its specs first, as for the cross-sensor encoder)."""
        return cls(list(config["sensors"]), embed_dim=config["embed_dim"], width=config["width"],
                   temperature=config["temperature"])

    def save(self, path: str | Path) -> None:
        """Write ``{"config": ..., "state_dict": ...}``, loadable with ``torch.load(weights_only=True)``, atomically
        (:func:`rsretrieve.model.encoder.save_atomic`)."""
        save_atomic({"config": self.config(), "state_dict": self.state_dict()}, path)
