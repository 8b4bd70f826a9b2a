"""The sensor registry: ``register_sensor`` / ``get_sensor`` / ``list_sensors``.

Specs are loaded from ``data_catalog/sensors/*.yaml`` of the project (or the directories named, separated by
``os.pathsep``, in ``RSRETRIEVE_SENSOR_DIRS``) the first time the registry is consulted. Registering a name twice is
an error, never a silent override.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rsretrieve.sensors.base import SensorSpec, SensorSpecError, load_spec

log = logging.getLogger(__name__)

_REGISTRY: dict[str, SensorSpec] = {}
_LOADED = False

#: the project's own sensor catalog
DEFAULT_SENSOR_DIR = Path(__file__).resolve().parents[2] / "data_catalog" / "sensors"


def sensor_dirs() -> list[Path]:
    """Directories the registry loads YAML specs from, in order."""
    extra = os.environ.get("RSRETRIEVE_SENSOR_DIRS", "")
    dirs = [Path(p) for p in extra.split(os.pathsep) if p]
    return [DEFAULT_SENSOR_DIR, *dirs]


def register_sensor(spec: SensorSpec) -> SensorSpec:
    """Add ``spec`` to the registry.

    Raises:
        ValueError: if a sensor of the same name is registered already.
    """
    if spec.name in _REGISTRY:
        other = _REGISTRY[spec.name].source or "<code>"
        raise ValueError(f"sensor {spec.name!r} is registered twice: {other} and {spec.source or '<code>'}")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_sensor(name: str) -> None:
    """Remove a sensor (tests use this to register temporary specs)."""
    _REGISTRY.pop(name, None)


def _ensure_loaded() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for d in sensor_dirs():
        if not d.is_dir():
            log.warning("sensor directory %s does not exist", d)
            continue
        for path in sorted(d.glob("*.yaml")):
            spec = load_spec(path)
            if spec.name in _REGISTRY:  # a copied spec whose name was not changed: one line naming both files
                raise SensorSpecError(f"{path}: name: sensor {spec.name!r} is defined already by "
                                      f"{_REGISTRY[spec.name].source or '<code>'}; give the new sensor another "
                                      "name (and file name)")
            register_sensor(spec)


def get_sensor(name: str) -> SensorSpec:
    """The spec registered as ``name``.

    Raises:
        KeyError: with the list of known sensors.
    """
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown sensor {name!r}; known sensors: {', '.join(sorted(_REGISTRY))}") from None


def list_sensors(family: str | None = None) -> list[str]:
    """Registered sensor names, sorted, optionally of one family."""
    _ensure_loaded()
    return sorted(n for n, s in _REGISTRY.items() if family is None or s.family == family)
