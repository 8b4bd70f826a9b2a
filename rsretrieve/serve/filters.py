"""The ``filters`` field of ``POST /query``: a JSON object -> keyword arguments of ``run_query``.

Only the shape of each value is checked here (the query layer checks the values themselves, with the same one-line
messages as the CLI). ``within`` must be a GeoJSON object in the request: the service never opens a path taken from a
request, so a string there is refused rather than read as a file name.
"""

from __future__ import annotations

import json
from typing import Any

from rsretrieve.index.filters import first_line, loads_strict_json, region_from_geojson
from rsretrieve.sensors import get_sensor

#: filter name -> what it must be (for messages)
FILTER_KEYS: dict[str, str] = {
    "bbox": "[W, S, E, N] in degrees",
    "within": "a GeoJSON Polygon / MultiPolygon geometry, Feature or FeatureCollection object (EPSG:4326)",
    "start": "an ISO date or date-time string",
    "end": "an ISO date or date-time string",
    "target_sensors": "a list of sensor names",
    "k": "a positive integer",
    "one_per_cell": "true or false",
    "exclude_own_scene": "true or false",
    "exclude_own_cell": "true or false",
    "sensor": "a sensor name",
    "point": "[lon, lat] in degrees",
    "window": "[col, row, width, height] in whole pixels",
}
#: filters that only make sense for an uploaded tile
UPLOAD_ONLY = ("sensor", "point", "window")


class FilterError(ValueError):
    """A ``filters`` field that cannot be used; the message says why in one line."""


def _number(v: object) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        float(v)  # an integer of hundreds of digits has no float
    except OverflowError:
        return False
    return True


def _need(ok: bool, key: str, value: object) -> None:
    if not ok:
        raise FilterError(f"filter {key!r} must be {FILTER_KEYS[key]}, got {json.dumps(value)[:80]}")


def parse_filters(text: str | None) -> dict[str, Any]:
    """Parse and shape-check the ``filters`` JSON text.

    Args:
        text: the form field; ``None`` or blank means no filters.

    Returns:
        Keyword arguments for :func:`rsretrieve.index.query.run_query` (``within`` as a shapely geometry,
        ``point`` / ``window`` / ``bbox`` as tuples).

    Raises:
        FilterError: not a JSON object, an unknown key, or a value of the wrong kind.
    """
    if text is None or not text.strip():
        return {}
    try:
        doc = loads_strict_json(text)
    except json.JSONDecodeError as e:
        raise FilterError(f"filters must be a JSON object: {e}") from None
    except RecursionError:
        raise FilterError("filters must be a JSON object of reasonable size: nested too deep") from None
    except ValueError as e:  # a key twice, NaN / Infinity; an integer of more than 4300 digits
        why = first_line(e)
        if "digits" in why:
            raise FilterError(f"filters must be a JSON object of reasonable size: {why}") from None
        raise FilterError(f"filters must be standard JSON: {why}") from None
    if not isinstance(doc, dict):
        kind = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
                list: "an array"}.get(type(doc), type(doc).__name__)
        raise FilterError(f"filters must be a JSON object, got {kind}")
    unknown = sorted(set(doc) - set(FILTER_KEYS))
    if unknown:
        raise FilterError(f"unknown filter {unknown[0]!r}; known filters: {', '.join(FILTER_KEYS)}")
    out: dict[str, Any] = {}
    for key, v in doc.items():
        if v is None:
            continue
        match key:
            case "bbox":
                _need(isinstance(v, list) and len(v) == 4 and all(map(_number, v)), key, v)
                out[key] = tuple(float(x) for x in v)
            case "within":
                if isinstance(v, str):
                    raise FilterError(f"filter 'within' must be {FILTER_KEYS[key]}, not a string: the service "
                                      "never opens files named in a request")
                try:
                    out[key] = region_from_geojson(v, "within")
                except ValueError as e:
                    raise FilterError(first_line(e)) from None
            case "start" | "end":
                _need(isinstance(v, str), key, v)
                out[key] = v
            case "target_sensors":
                _need(isinstance(v, list) and bool(v) and all(isinstance(s, str) and s for s in v), key, v)
                out[key] = list(v)
            case "k":
                _need(isinstance(v, int) and not isinstance(v, bool), key, v)
                out[key] = v
            case "one_per_cell" | "exclude_own_scene" | "exclude_own_cell":
                _need(isinstance(v, bool), key, v)
                out[key] = v
            case "sensor":
                _need(isinstance(v, str), key, v)
                if not v.strip():  # the query layer's words (the CLI's ``--sensor ''``), not "unknown sensor ''"
                    raise FilterError(f"sensor must not be empty, got {v!r}")
                try:
                    get_sensor(v)
                except KeyError as e:
                    raise FilterError(str(e.args[0] if e.args else e)) from None
                out[key] = v
            case "point":
                _need(isinstance(v, list) and len(v) == 2 and all(map(_number, v)), key, v)
                out[key] = (float(v[0]), float(v[1]))
            case "window":
                # numbers, as the CLI's --window 0.0,0,48,48: the query layer takes whole ones (48.0 too) and refuses
                # a fraction of a pixel in the CLI's words
                _need(isinstance(v, list) and len(v) == 4 and all(map(_number, v)), key, v)
                out[key] = tuple(v)
    return out
