"""Sensor specifications and the registry."""

from rsretrieve.sensors.base import (Band, BaselineOffset, CloudTest, Layout, SensorSpec, SensorSpecError, load_spec,
                                     parse_baseline, spec_from_dict)
from rsretrieve.sensors.registry import get_sensor, list_sensors, register_sensor, unregister_sensor

__all__ = [
    "Band",
    "BaselineOffset",
    "CloudTest",
    "Layout",
    "SensorSpec",
    "SensorSpecError",
    "get_sensor",
    "list_sensors",
    "load_spec",
    "parse_baseline",
    "register_sensor",
    "spec_from_dict",
    "unregister_sensor",
]
