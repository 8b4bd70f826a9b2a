"""Uploaded query tiles: a byte limit enforced while the request streams in, then a GeoTIFF check.

The request body is counted as it arrives (``Content-Length`` is checked first, and a body without one is cut off
at the limit), so an oversized upload is refused before it is read in full; the multipart parser keeps at most 1 MiB
of a file in memory and spools the rest to disk. The tile is then copied under a server-chosen name into a private
temporary folder (mode 0700, deleted after the query), checked for TIFF / BigTIFF magic bytes and opened by
rasterio as a GeoTIFF (the query refuses a tile with no valid pixel). No path from the request is ever opened: the
client's file name is used only cut to ``[A-Za-z0-9._-]``, as the names of folders inside that private one, where
the readers the CLI shares find the acquisition time or product it names (:func:`rsretrieve.serve.app.upload_folders`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile

from rsretrieve.data.scene import SceneError, open_raster
from rsretrieve.index.filters import first_line

log = logging.getLogger(__name__)

#: TIFF (little / big endian) and BigTIFF (little / big endian) signatures
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: largest ``tile_id`` / ``filters`` form field (a ``within`` polygon may be detailed)
MAX_FIELD_BYTES = 1 << 20
#: bytes allowed on top of the tile itself: the form fields, multipart boundaries and headers
FORM_OVERHEAD = 2 * MAX_FIELD_BYTES + (64 << 10)
#: largest decoded query raster (width x height x bands x bytes per sample): compressed uploads can inflate a lot
MAX_DECODED_BYTES = 256 << 20
_CHUNK = 1 << 20

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class UploadError(Exception):
    """An upload refused with an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _mb(n: float) -> str:
    return f"{n / 1e6:g} MB"


def _too_large(what: str, max_upload: int) -> UploadError:
    return UploadError(413, f"{what} exceeds the upload limit: a tile of at most {_mb(max_upload)} plus "
                            f"{_mb(FORM_OVERHEAD)} of form fields")


def check_content_length(headers: Headers, max_upload: int) -> None:
    """Refuse at once (413) a request announcing more body than a tile of ``max_upload`` bytes and the fields."""
    value = headers.get("content-length")
    if value is None:
        return
    try:
        n = int(value)
    except ValueError:
        raise UploadError(400, f"invalid Content-Length header {value!r}") from None
    if n > max_upload + FORM_OVERHEAD:
        raise _too_large(f"request body of {_mb(n)}", max_upload)


def limited_receive(receive: Receive, max_upload: int) -> Receive:
    """Wrap an ASGI ``receive`` so that reading more body than a tile of ``max_upload`` bytes and the form fields
    raises :class:`UploadError` (413) as soon as the excess arrives."""
    total = 0

    async def wrapped() -> MutableMapping[str, Any]:
        nonlocal total
        message = await receive()
        if message.get("type") == "http.request":
            total += len(message.get("body", b""))
            if total > max_upload + FORM_OVERHEAD:
                raise _too_large("request body", max_upload)
        return message

    return wrapped


async def save_upload(upload: UploadFile, dest: Path, max_bytes: int) -> int:
    """Copy an uploaded file to ``dest`` (created, mode 0600) in chunks; returns its size in bytes.

    Raises:
        UploadError: 413 past ``max_bytes``; 422 for an empty file or one that is not a TIFF / BigTIFF.
    """
    size, head = 0, b""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := await upload.read(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise UploadError(413, f"uploaded tile exceeds the upload limit of {_mb(max_bytes)}")
            if len(head) < 4:
                head += chunk[:4 - len(head)]
            await run_in_threadpool(out.write, chunk)
    if size == 0:
        raise UploadError(422, "uploaded tile is empty (0 bytes)")
    if head not in TIFF_MAGIC:
        raise UploadError(422, "uploaded tile is not a GeoTIFF (no TIFF / BigTIFF signature II*\\0, MM\\0*, II+\\0 "
                               "or MM\\0+ at its start)")
    return size


def check_geotiff(path: Path) -> None:
    """Open ``path`` with rasterio and check that it is a georeferenced GeoTIFF of bounded decoded size.

    Raises:
        UploadError: 422 with the reason (unreadable or truncated, not GTiff, no CRS or transform, too large).
    """
    try:
        ds = open_raster(str(path))
    except SceneError as e:
        raise UploadError(422, f"uploaded tile is not a readable GeoTIFF: {e}") from None
    with ds:
        if ds.driver != "GTiff":
            raise UploadError(422, f"uploaded tile is not a GeoTIFF (GDAL reads it as {ds.driver})")
        if ds.crs is None or ds.transform == rasterio.Affine.identity():
            raise UploadError(422, "uploaded tile is not georeferenced (a GeoTIFF with a CRS and geotransform is "
                                   "needed)")
        decoded = ds.width * ds.height * ds.count * max(np.dtype(t).itemsize for t in ds.dtypes)
        if decoded > MAX_DECODED_BYTES:
            raise UploadError(413, f"uploaded tile is {ds.width} x {ds.height} px x {ds.count} bands "
                                   f"({_mb(decoded)} decoded, over {_mb(MAX_DECODED_BYTES)}): send a smaller window")
        try:  # the last block of every band: a truncated file fails here rather than mid-query
            rows = math.ceil(ds.height / ds.block_shapes[0][0]) - 1
            cols = math.ceil(ds.width / ds.block_shapes[0][1]) - 1
            ds.read(window=ds.block_window(1, rows, cols))
        except (RasterioError, ValueError) as e:
            raise UploadError(422, f"uploaded tile is a corrupt or truncated TIFF: {first_line(e)}") from None
