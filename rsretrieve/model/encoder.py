"""The cross-sensor encoder: sensor branches -> shared semantic head -> learned metric -> exported vector.

    encoder = CrossSensorEncoder(["sentinel1", "sentinel2", "enmap"], dim=64)
    v = encoder.embed("sentinel2", x)           # x (B, 12, 48, 48) normalised -> v (B, 128), unit norm

Adding a sensor trains only its branch against the frozen shared parts::

    encoder.freeze_shared()                     # head, metric and every existing branch stop learning
    encoder.add_sensor("landsat8")              # starts from the optical family's weights (sentinel2's branch)

so existing sensors' embeddings, and the index segments built from them, stay bit-identical.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rsretrieve import __version__
from rsretrieve.files import write_atomic
from rsretrieve.model.branches import SensorBranch, build_branch
from rsretrieve.model.head import HeadConfig, SemanticHead
from rsretrieve.model.metric import LearnedMetric
from rsretrieve.sensors.base import SensorSpec
from rsretrieve.sensors.registry import get_sensor

log = logging.getLogger(__name__)


def spec_fingerprint(spec: SensorSpec) -> dict[str, Any]:
    """Plain-typed facts of a spec that the branch weights depend on (stored in checkpoints, checked on load).

    ``mean`` and ``std`` are the per-band normalisation statistics: tiles are normalised with the registered spec's
    (:func:`rsretrieve.data.tiles.normalise`), so a model loaded after they were edited would embed other inputs
    than it was trained on, silently. Checkpoints written before they were part of the fingerprint lack them and
    load unchecked for them (:func:`check_spec`).
    """
    return {
        "family": spec.family,
        "bands": list(spec.band_names),
        "center_nm": [b.center_nm for b in spec.bands],
        "valid": [b.valid for b in spec.bands],
        "polarization": [b.polarization for b in spec.bands],
        "mean": [b.mean for b in spec.bands],
        "std": [b.std for b in spec.bands],
    }


#: fields of a spec's summary (:meth:`SensorSpec.to_dict`) that no vector depends on, left out of
#: :meth:`CrossSensorEncoder.embedding_fingerprints`: the file it was loaded from, and the cloud test (which decides
#: which tiles exist and their valid fraction, not what a tile embeds to)
_NOT_EMBEDDED = ("source", "cloud_test")

#: what each fingerprint field is, for messages
_FACTS = {"family": "family", "bands": "band names", "center_nm": "centre wavelength (nm)", "valid": "validity",
          "polarization": "polarisation", "mean": "normalisation mean", "std": "normalisation std"}


def check_spec(name: str, facts: dict[str, Any]) -> None:
    """Raise ValueError (one line) when the registered spec of sensor ``name`` differs from ``facts``, the
    :func:`spec_fingerprint` a model was trained with, naming the spec file and the first fact that changed.

    Only the fields present in ``facts`` are compared: a checkpoint of an older version, written before a field
    joined the fingerprint, still loads.
    """
    spec = get_sensor(name)
    now = spec_fingerprint(spec)
    for key, old in facts.items():
        new = now.get(key)
        if new == old:
            continue
        what = _FACTS.get(key, key)
        if isinstance(old, list) and isinstance(new, list) and len(old) == len(new) and key != "bands":
            i = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
            change = f"{what} of band {spec.bands[i].name}: {old[i]} in the model, {new[i]} now"
        else:
            change = f"{what}: {_show(old)} in the model, {_show(new)} now"
        raise ValueError(f"sensor {name!r}: the registered spec ({spec.source or 'registered in code'}) differs from "
                         f"the one the model was trained with ({change}); restore the spec or retrain the model")


def _show(v: Any) -> str:
    return ", ".join(map(str, v)) if isinstance(v, list) else str(v)


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (:func:`rsretrieve.files.write_atomic`): a reader (a running
    service, ``query``) sees the old file or the new one, never a partial one, and a run killed while saving leaves
    the old model in place."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(Path(path), buf.getvalue())


class CrossSensorEncoder(nn.Module):
    """Branches per sensor, one shared head and one learned metric.

    Args:
        sensors: registered sensor names.
        dim: token and head width ``D`` (a multiple of 4 and of ``head.heads``).
        embed_dim: width ``E`` of the exported vectors.
        head: head shape (``dim`` is overwritten by ``dim``); a dict is accepted (from a checkpoint).
        temperature: initial temperature of the metric.
        branch: keyword arguments of every branch (``stem_dim``, ``cells``, ``tokens``).
    """

    kind = "ours"

    def __init__(self, sensors: list[str], dim: int = 64, embed_dim: int = 128,
                 head: HeadConfig | dict[str, Any] | None = None, temperature: float = 0.07,
                 branch: dict[str, Any] | None = None):
        super().__init__()
        if not sensors:
            raise ValueError("an encoder needs at least one sensor")
        head = HeadConfig(**head) if isinstance(head, dict) else (head or HeadConfig())
        head = replace(head, dim=dim)
        self.dim, self.embed_dim, self.temperature_init = dim, embed_dim, temperature
        self.head_config = head
        self.branch_kwargs = dict(branch or {})
        self.branches = nn.ModuleDict()
        self.head = SemanticHead(head)
        self.metric = LearnedMetric(dim, embed_dim, temperature=temperature)
        self._frozen: set[str] = set()
        for name in sensors:
            self.add_sensor(name, init_from_family=False)

    # -- structure --------------------------------------------------------------------------------------------
    @property
    def sensors(self) -> list[str]:
        """Sensor names, in the order they were added."""
        return list(self.branches.keys())

    def add_sensor(self, name: str, init_from_family: bool = True) -> SensorBranch:
        """Add the branch of a registered sensor.

        Args:
            name: registered sensor name.
            init_from_family: copy the weights of the first existing branch of the same family (the branches of a
                family have identical parameter shapes), so e.g. Landsat 8 starts from Sentinel-2's optical weights.

        Returns:
            The new branch (trainable even after :meth:`freeze_shared`).
        """
        if name in self.branches:
            raise ValueError(f"sensor {name!r} is in the encoder already")
        spec = get_sensor(name)
        new = build_branch(spec, self.dim, **self.branch_kwargs)
        donor = next((s for s, b in self.branches.items() if b.family == spec.family), None)
        if init_from_family and donor is not None:
            new.load_state_dict(self.branches[donor].state_dict())
            log.info("branch %s starts from the %s weights of %s", name, spec.family, donor)
        param = next(self.parameters(), None)
        if param is not None:
            new.to(param.device)
        self.branches[name] = new
        return new

    def freeze_shared(self) -> None:
        """Stop training of the head, the metric and every branch there is now; later branches stay trainable."""
        self._frozen = set(self.branches.keys())
        for module in (self.head, self.metric, *self.branches.values()):
            module.requires_grad_(False)
        log.info("frozen: head, metric and branches %s", ", ".join(sorted(self._frozen)))

    @property
    def frozen(self) -> list[str]:
        """Sensors whose branches are frozen (empty unless :meth:`freeze_shared` was called)."""
        return sorted(self._frozen)

    # -- computation -----------------------------------------------------------------------------------------
    def tokens(self, sensor: str, x: Tensor) -> Tensor:
        """Branch tokens: ``(B, C, H, W)`` -> ``(B, N, D)``."""
        if sensor not in self.branches:
            raise KeyError(f"no branch for sensor {sensor!r}; the encoder has {', '.join(self.sensors)}")
        return self.branches[sensor].forward_features(x)

    def features(self, sensor: str, x: Tensor) -> Tensor:
        """Pooled head output ``h``: ``(B, C, H, W)`` -> ``(B, D)``."""
        return self.head(self.tokens(sensor, x), self.branches[sensor].family)

    def project(self, sensor: str, x: Tensor) -> Tensor:
        """``W h`` before normalisation: ``(B, C, H, W)`` -> ``(B, E)`` (what the objective trains on)."""
        return self.metric.project(self.features(sensor, x))

    def project_many(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """:meth:`project` of several sensors' batches, with one pass of the shared head for all of them.

        Tokens of sensors with the same token count are concatenated along the batch before the head (whose every
        operation is per sample), so training runs a few large matrix products instead of one small set per sensor.

        Args:
            inputs: sensor -> normalised tiles ``(B_s, C_s, H_s, W_s)``.

        Returns:
            sensor -> ``(B_s, E)``, equal to ``project(sensor, x)`` up to float rounding.
        """
        marked = {s: self.head.mark_family(self.tokens(s, x), self.branches[s].family) for s, x in inputs.items()}
        groups: dict[int, list[str]] = {}
        for s, t in marked.items():
            groups.setdefault(t.shape[1], []).append(s)
        out: dict[str, Tensor] = {}
        for names in groups.values():
            h = self.head.forward_marked(torch.cat([marked[s] for s in names]))  # (sum B_s, D)
            z = self.metric.project(h)  # (sum B_s, E)
            for s, part in zip(names, z.split([len(marked[s]) for s in names])):
                out[s] = part
        return out

    def embed(self, sensor: str, x: Tensor) -> Tensor:
        """Exported vectors: ``(B, C, H, W)`` normalised tiles -> ``(B, E)`` unit vectors (inner product = cosine).

        The learned similarity is ``logit_scale * <v_a, v_b>`` (see :mod:`rsretrieve.model.metric`).
        """
        return self.metric.export(self.features(sensor, x))

    def forward(self, sensor: str, x: Tensor) -> Tensor:
        """Same as :meth:`embed`."""
        return self.embed(sensor, x)

    @property
    def logit_scale(self) -> Tensor:
        """``1 / tau`` of the learned metric."""
        return self.metric.logit_scale

    def embedding_fingerprints(self) -> dict[str, str]:
        """Sensor -> SHA-256 (first 16 hex digits) of everything :meth:`embed` of that sensor depends on.

        That is the code version, the shape options, the weights of the head, of the metric and of the sensor's own
        branch (not the other branches), and the sensor's registered spec (its normalisation statistics included,
        which the tiles are normalised with). Two models with the same fingerprint for a sensor give that sensor's
        tiles bit-identical vectors, so an index update for a model that only added branches
        (``configs/add_sensor.yaml``) copies the other sensors' vectors from the index instead of re-embedding them.
        """
        cfg = self.config()
        shared = hashlib.sha256(json.dumps({"version": __version__, **{k: cfg[k] for k in (
            "kind", "dim", "embed_dim", "head", "temperature", "branch")}}, sort_keys=True).encode())
        state = self.state_dict()
        for key in sorted(k for k in state if not k.startswith("branches.")):
            _hash_tensor(shared, key, state[key])
        out = {}
        for name in self.sensors:
            h = shared.copy()
            spec = {k: v for k, v in get_sensor(name).to_dict().items() if k not in _NOT_EMBEDDED
                    and (k != "baseline_offset" or v is not None)}  # without one: hashed as before the field
            h.update(json.dumps({"sensor": name, "spec": spec}, sort_keys=True, default=str).encode())
            for key in sorted(k for k in state if k.startswith(f"branches.{name}.")):
                _hash_tensor(h, key, state[key])
            out[name] = h.hexdigest()[:16]
        return out

    # -- persistence -----------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Plain-typed constructor arguments plus the spec facts of each sensor (for checkpoints)."""
        return {
            "kind": self.kind,
            "sensors": self.sensors,
            "dim": self.dim,
            "embed_dim": self.embed_dim,
            "head": self.head_config.to_dict(),
            "temperature": self.temperature_init,
            "branch": dict(self.branch_kwargs),
            "specs": {name: spec_fingerprint(get_sensor(name)) for name in self.sensors},
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CrossSensorEncoder:
        """Build an (untrained) encoder from :meth:`config` (:func:`rsretrieve.model.checkpoint.build_model` checks
        its specs first)."""
        return cls(list(config["sensors"]), dim=config["dim"], embed_dim=config["embed_dim"],
                   head=dict(config["head"]), temperature=config["temperature"], branch=dict(config["branch"]))

    def save(self, path: str | Path) -> None:
        """Write ``{"config": ..., "state_dict": ...}``, loadable with ``torch.load(weights_only=True)``, atomically
        (:func:`save_atomic`)."""
        save_atomic({"config": self.config(), "state_dict": self.state_dict()}, path)


def _hash_tensor(h: Any, key: str, t: Tensor) -> None:
    """Feed a named tensor (name, dtype, shape and raw bytes) to the hash ``h``."""
    t = t.detach().cpu().contiguous()
    h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
