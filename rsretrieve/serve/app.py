"""``rsretrieve serve``: a local HTTP service over one workspace (FastAPI).

Endpoints:

* ``GET /health``: status, number of indexed tiles, model name and checksum, sensors (``HEAD /health``: the same
  status and headers, no body, for monitors and load balancers that probe with HEAD).
* ``POST /query``: multipart form with either ``tile`` (an uploaded GeoTIFF) or ``tile_id`` (a catalog tile), and
  ``filters`` (a JSON object, see :data:`rsretrieve.serve.filters.FILTER_KEYS`); returns a GeoJSON
  FeatureCollection of the hits, best first, with the ``query``, the search ``plan`` and the query's ``warnings``
  (the lines the CLI prints on stderr for it, such as a target sensor the index holds no tiles of) as foreign
  members.
* ``GET /tiles/{tile_id}/preview.png``: a quicklook of a catalog tile, about 192 px across (RGBA: nodata
  transparent).

Errors (every 4xx, and the app's own 500s) are JSON ``{"detail": "<one line>"}``: 400 malformed form, 404 unknown
tile id or route, 413 upload over the limit (or a form field over 1 MiB), 415 a ``/query`` body that is not a form,
422 a bad request: a tile id that is not plain ASCII digits (``1_0``, `` 7 ``, ``+7``, ``7.0`` are refused, not read
as numbers), a form field given twice, an unknown one, more parts than the form has, a query parameter on
``POST /query`` (it reads the form only), bad filters, or an upload that is not a usable GeoTIFF or holds no valid
pixels. FastAPI's own request validation errors are turned into the same one line
(:func:`_first_error_line`). The model and the index are loaded once, by :func:`create_app`, and shared by all
requests.
"""

from __future__ import annotations

import email.message
import io
import json
import logging
import math
import re
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BeforeValidator
from rasterio.errors import RasterioError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from rsretrieve.data.scene import product_name
from rsretrieve.index.filters import first_line
from rsretrieve.index.query import NoValidPixelsError, QueryError, QueryResult, run_query
from rsretrieve.serve.filters import UPLOAD_ONLY, FilterError, parse_filters
from rsretrieve.serve.uploads import (MAX_FIELD_BYTES, UploadError, check_content_length, check_geotiff,
                                      limited_receive, save_upload)
from rsretrieve.serve.worker import EngineWorker
from rsretrieve.viz.results import feature_collection

log = logging.getLogger(__name__)

#: side of a preview PNG in pixels (approximately: tiles are scaled by a whole factor, nearest neighbour)
PREVIEW_PX = 192
_FORM_FIELDS = ("tile", "tile_id", "filters")
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
#: files, and fields, the form parser takes from ``POST /query``: more than the form's own (one ``tile``), so that
#: a ``tile`` given twice, or a file under another name, is refused naming it (a parser limit of one file was a 400
#: "Too many files"); the request's byte limit bounds what they hold, and each file keeps at most 1 MiB in memory
_MAX_PARTS = 2 * len(_FORM_FIELDS)
#: a tile id as a request may write it: ASCII decimal digits, nothing else (``str.isdigit`` and ``int`` take more)
_TILE_ID = re.compile(r"[0-9]+")
#: a character of an uploaded tile's name that its folder's name does not keep (upload_folders): product names
#: (S1A_IW_GRDH_..., ENMAP01-____L2A-..., LC08_L2SP_...) have none
_UNSAFE_NAME_CHAR = re.compile(r"[^A-Za-z0-9._-]")
_LOCATIONS = {"path": "path parameter", "query": "query parameter", "header": "header", "cookie": "cookie",
              "body": "body field"}
_QUERY_BODY = {"requestBody": {"content": {"multipart/form-data": {"schema": {
    "type": "object",
    "properties": {"tile": {"type": "string", "format": "binary", "description": "a GeoTIFF query tile"},
                   "tile_id": {"type": "integer", "description": "or a tile of the catalog"},
                   "filters": {"type": "string", "description": 'JSON object, e.g. {"bbox": [W, S, E, N], "k": 10}'}},
}}}}}


class ServiceError(Exception):
    """A request refused with an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def tile_id_value(value: object) -> int:
    """A tile id written in a request (a path segment or a form field) as an int.

    Only ASCII decimal digits are taken: ``int()`` would also read ``"1_0"`` as 10, ``" 7 "``, ``"+7"`` and
    ``"\\u0667"`` (an Arabic-Indic seven) as 7, and FastAPI's ``int`` parameters ``"7.0"`` as 7.

    Raises:
        ValueError: ``"must be ..., got '...'"`` (the caller puts the parameter's name in front).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    shown = repr(value[:40]) + ("..." if len(value) > 40 else "") if isinstance(value, str) else repr(value)[:40]
    if not isinstance(value, str) or not _TILE_ID.fullmatch(value):
        raise ValueError(f"must be an integer written in ASCII digits 0-9 only (no sign, spaces, underscores or "
                         f"decimal point), got {shown}")
    if len(value) > 19 or int(value) >= 2**63:
        raise ValueError(f"must be below 2^63 (tile ids are 64-bit integers), got {shown}")
    return int(value)


TileId = Annotated[int, BeforeValidator(tile_id_value)]


def _first_error_line(exc: RequestValidationError) -> str:
    """FastAPI's list of validation errors as one line: the first error, naming the parameter and the reason."""
    errors = exc.errors()
    if not errors:
        return "invalid request"
    e = errors[0]
    loc = [str(x) for x in e.get("loc", ())]
    name = ".".join(loc[1:]) or (loc[0] if loc else "request")
    err = (e.get("ctx") or {}).get("error")
    if e.get("type") == "value_error" and err is not None:  # our own validators: "must be ..."
        line = f"{name} {err}"
    else:
        msg = str(e.get("msg") or "is invalid")
        line = f"{_LOCATIONS.get(loc[0], 'parameter') if loc else 'parameter'} {name!r}: {msg[:1].lower()}{msg[1:]}"
        if isinstance(e.get("input"), (str, int, float)):
            line += f", got {repr(e['input'])[:40]}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return " ".join((line + more).split())


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _error(422, _first_error_line(exc))


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    return _error(exc.status, exc.message)  # ServiceError, UploadError


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """Any other exception: a JSON 500 in one line naming its type (the traceback goes to the server's log, as the
    server re-raises it after this response), rather than Starlette's plain-text "Internal Server Error"."""
    return _error(500, f"internal error in {request.method} {request.url.path}: {type(exc).__name__}: "
                       f"{first_line(exc)[:200]}")


async def _no_query_parameters(request: Request) -> None:
    """``POST /query`` reads the form only: a query parameter (``/query?tile_id=3``) would be ignored, so it is
    refused. The GET endpoints ignore query parameters, as caches and monitors add their own (``?ts=...``)."""
    if request.query_params:
        first = next(iter(request.query_params.keys()))
        hint = "; send tile_id and filters as form fields" if request.url.path == "/query" else ""
        raise ServiceError(422, f"{request.url.path} takes no query parameters, got {first[:40]!r}{hint}")


def create_app(workspace: str | Path, model: str | None = None, max_upload_mb: float = 50) -> FastAPI:
    """The service over ``workspace``; the model and the index are loaded here, once.

    Args:
        workspace: a workspace with a trained model and its index.
        model: the model name (``WS/checkpoints/NAME``); default: the one the index was built with
            (:meth:`rsretrieve.workspace.Workspace.indexed_model`).
        max_upload_mb: largest uploaded query tile, in MB (10^6 bytes).

    Raises:
        ValueError: ``max_upload_mb`` not a positive number, or under one byte (10^-6 MB): a limit of 0 bytes.
        rsretrieve.workspace.WorkspaceError, FileNotFoundError, rsretrieve.index.query.QueryError,
        rsretrieve.index.store.IndexMismatchError: no workspace, model or index, or an index of another model.
    """
    if isinstance(max_upload_mb, bool) or not isinstance(max_upload_mb, (int, float)) or not (
            math.isfinite(max_upload_mb) and max_upload_mb > 0):
        raise ValueError(f"max_upload_mb must be a positive number of MB, got {max_upload_mb!r}")
    if int(max_upload_mb * 1e6) < 1:  # the limit is in whole bytes: it was 0, and every upload a 413
        raise ValueError(f"max_upload_mb must be at least 1e-06 (one byte), got {max_upload_mb!r}")
    follow = model is None  # the index's model, whichever it is then: `rsretrieve index --model NAME` switches it
    if model is None:
        from rsretrieve.workspace import Workspace

        model = Workspace.open(workspace).indexed_model()
    worker = EngineWorker(workspace, model, follow=follow)
    health = {"status": "ok", "model": model, **worker.call(_engine_health, worker.engine),
              "max_upload_mb": max_upload_mb}
    log.info("serving %s: model %s (%s), %d tiles indexed; search kernels ready in %.2f s", workspace, model,
             health["model_checksum"], health["tiles_indexed"], worker.warm_up_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        worker.close()

    app = FastAPI(title="rsretrieve", summary="Multi-sensor remote-sensing scene retrieval", lifespan=lifespan)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(UploadError, _service_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.state.worker, app.state.health = worker, health
    app.state.max_upload_bytes = int(max_upload_mb * 1e6)

    @app.get("/health")
    async def get_health() -> dict[str, Any]:
        """Status, indexed tiles, model name and checksum, sensors: of the model and index generation queries are
        answered with now (the published generation, unless that holds another model's vectors)."""
        # a long-running service follows every `rsretrieve index` run, and a model retrained and re-indexed
        health.update(await worker.run_engine(_engine_health))
        return health

    @app.head("/health", response_class=Response)
    async def head_health() -> Response:
        """``GET /health`` without its body: the same status and headers (monitors and load balancers probe with
        HEAD; it was a 405)."""
        full = JSONResponse(await get_health())
        return Response(status_code=full.status_code, headers=dict(full.headers))  # its Content-Length kept

    @app.post("/query", openapi_extra=_QUERY_BODY, dependencies=[Depends(_no_query_parameters)])
    async def post_query(request: Request) -> Response:
        """Query by an uploaded GeoTIFF tile or a catalog tile id, under the ``filters``; GeoJSON out."""
        try:
            return JSONResponse(await _query(app, request))
        except (UploadError, ServiceError) as e:
            return _error(e.status, e.message)
        except (QueryError, FilterError) as e:
            return _error(422, (str(e).splitlines() or ["invalid query"])[0])

    @app.get("/tiles/{tile_id}/preview.png", response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    async def get_preview(tile_id: Annotated[TileId, PathParam(description="a tile id of the catalog")]) -> Response:
        """A quicklook PNG of a catalog tile (true colour, or the usual VV/VH composite for SAR)."""
        try:
            png = await worker.run_engine(_preview_png, tile_id)
        except ServiceError as e:
            return _error(e.status, e.message)
        return Response(png, media_type="image/png")

    return app


def _boundary(ctype: str) -> str | None:
    """The boundary parameter of a multipart/form-data content type (any case, quoted or not), else None."""
    msg = email.message.Message()
    msg["content-type"] = ctype
    if msg.get_content_type() != "multipart/form-data":
        return None
    boundary = msg.get_param("boundary")
    return boundary if isinstance(boundary, str) and boundary else None


def _watching_close(receive: Any, boundary: str | None, state: dict[str, bool]) -> Any:
    """``receive`` that sets ``state["closed"]`` once the body has passed the multipart closing boundary
    (CRLF ``--BOUNDARY--``, found across chunk edges; an epilogue after it may be of any length). The CRLF is part
    of the delimiter (RFC 2046), which a part may not contain: without it, ``--B--`` inside a field's value counted
    as the end of a body cut short after it."""
    marker = f"\r\n--{boundary}--".encode() if boundary else b""
    seen = b"\r\n"  # a body with no part starts with the delimiter's dashes

    async def wrapped() -> Any:
        nonlocal seen
        message = await receive()
        if marker and not state["closed"] and message.get("type") == "http.request":
            window = seen + message.get("body", b"")
            state["closed"] = marker in window
            seen = window[-(len(marker) - 1):]
        return message

    return wrapped


def _form_limit_error(e: HTTPException) -> Exception:
    """Starlette's form parser refuses a part past ``max_part_size`` and parts past ``max_files`` / ``max_fields``
    with a 400 in its own words (``Part exceeded maximum size of 1024KB.``): here the first is a 413 naming the
    fields and their limit (a detailed ``within`` polygon reaches it), the second a 422 naming the fields expected.
    Other parser errors (no boundary, not multipart at all) stay 400s: a malformed form."""
    detail = str(e.detail)
    if e.status_code == 400 and "exceeded maximum size" in detail:
        return ServiceError(413, f"a form field exceeds {MAX_FIELD_BYTES >> 20} MiB, the limit of tile_id and "
                                 f"filters (a 'within' polygon that large: simplify it)")
    if e.status_code == 400 and detail.startswith("Too many"):
        return ServiceError(422, f"too many form parts (more than {_MAX_PARTS} files or fields); expected "
                                 f"{', '.join(_FORM_FIELDS)}, each at most once")
    return e


async def _query(app: FastAPI, request: Request) -> dict[str, Any]:
    limit = app.state.max_upload_bytes
    check_content_length(request.headers, limit)
    ctype = request.headers.get("content-type")
    if ctype is None or ctype.split(";")[0].strip().lower() not in _FORM_TYPES:
        got = "no content type" if ctype is None else f"content type {ctype.split(';')[0].strip()[:60]!r}"
        raise ServiceError(415, f"POST /query takes a multipart/form-data body (a tile file or a tile_id, and "
                                f"filters), got {got}")
    boundary, state = _boundary(ctype), {"closed": False}
    limited = Request(request.scope, receive=_watching_close(limited_receive(request.receive, limit), boundary, state))
    try:
        form = await limited.form(max_files=_MAX_PARTS, max_fields=_MAX_PARTS, max_part_size=MAX_FIELD_BYTES)
    except HTTPException as e:  # the parser's limits (Starlette words them, with a 400 for all)
        raise _form_limit_error(e) from None
    try:
        if boundary and not state["closed"]:
            # the parser keeps the parts before a cut and drops the rest silently: a request whose tile_id was in
            # the lost part was told to give one
            raise ServiceError(400, f"malformed multipart body: it does not end with its closing boundary "
                                    f"'--{boundary[:70]}--' (cut short?)")
        unknown = sorted(set(form.keys()) - set(_FORM_FIELDS))
        if unknown:
            raise ServiceError(422, f"unknown form field {unknown[0]!r}; expected {', '.join(_FORM_FIELDS)}")
        for k in _FORM_FIELDS:
            n = len(form.getlist(k))
            if n > 1:
                raise ServiceError(422, f"form field {k!r} is given {n} times; give it once")
        tile, tile_id, filters = (form.get(k) for k in _FORM_FIELDS)
        if tile is not None and not isinstance(tile, UploadFile):
            raise ServiceError(422, "tile must be an uploaded file (a multipart file part); the service never opens "
                                    "paths given in a request")
        if isinstance(filters, UploadFile) or isinstance(tile_id, UploadFile):
            raise ServiceError(422, "tile_id and filters must be form fields, not files")
        if (tile is None) == (tile_id is None):
            raise ServiceError(422, "give exactly one of a tile (an uploaded GeoTIFF) or a tile_id")
        kwargs = parse_filters(filters)
        if tile_id is not None:
            return await _query_catalog(app, tile_id, kwargs)
        return await _query_upload(app, tile, kwargs)
    finally:
        await form.close()


async def _query_catalog(app: FastAPI, text: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        tile_id = tile_id_value(text)
    except ValueError as e:
        raise ServiceError(422, f"tile_id {e}") from None
    given = [k for k in UPLOAD_ONLY if k in kwargs]
    if given:
        raise FilterError(f"filter {given[0]!r} applies to an uploaded tile, not to a tile_id")
    res, warnings = await app.state.worker.run_engine(_run_catalog, tile_id, kwargs)
    return _response(res, warnings)


def _run_catalog(engine: Any, tile_id: int, kwargs: dict[str, Any]) -> tuple[QueryResult, list[str]]:
    _catalog_tile(engine, tile_id)
    try:
        return _with_warnings(engine, lambda: run_query(engine, tile_id=tile_id, **kwargs))
    except (RasterioError, OSError) as e:
        raise ServiceError(500, f"tile {tile_id}: cannot read its scene: {first_line(e)}") from None


async def _query_upload(app: FastAPI, upload: UploadFile, kwargs: dict[str, Any]) -> dict[str, Any]:
    if kwargs.get("exclude_own_scene"):  # the CLI knows a file by its path; an upload has none: it would do nothing
        raise FilterError("filter 'exclude_own_scene' applies to a tile_id: an uploaded tile is not matched to a "
                          "catalog scene (query by the tile_id of a catalog tile to leave its scene out)")
    with tempfile.TemporaryDirectory(prefix="rsretrieve-upload-") as tmp:
        # the file has the server's name, never the client's; its folders carry the client's name (upload_folders)
        path = Path(tmp).joinpath(*upload_folders(upload.filename), "query.tif")
        path.parent.mkdir(parents=True, exist_ok=True)
        size = await save_upload(upload, path, app.state.max_upload_bytes)
        log.info("query upload: %d bytes", size)
        name = (upload.filename or "")[:100]
        label = f"uploaded tile {name!r}" if name else "uploaded tile"
        try:
            res, warnings = await app.state.worker.run_engine(_run_upload, path, label, kwargs)
        except UploadError as e:
            raise UploadError(e.status, _scrub(e.message, path, Path(tmp))) from None
        except QueryError as e:
            raise QueryError(_scrub(str(e), path, Path(tmp))) from None
        warnings = [_scrub(w, path, Path(tmp)) for w in warnings]
    res.query.origin = f"uploaded tile{f' ({name})' if name else ''}"
    return _response(res, warnings)


def upload_folders(filename: str | None) -> list[str]:
    """The folders (outermost first) an uploaded tile is saved in, inside its private temporary folder, named
    after the client's file name: ``[]`` where it has no usable name.

    The CLI reads what a file's tags do not say from the file's name and its folders' names: the acquisition time
    (``S1A_IW_GRDH_1SDV_20210817T004835_...``, ``LC08_L2SP_..._20230705_...``), a Sentinel-2 product's processing
    baseline (which decides the DN offset), the sensor of a file its bands leave open (Landsat 7's 8-bit RGB,
    ``LE07_L2SP_...``). Saved as ``query.tif`` alone, an upload lost all of it: a tile the CLI dates was answered
    with ``acquired: null``. So the client's name (without a .tif / .tiff suffix) and the folder it names, if any,
    become folders that the same readers see, while the file keeps the server's name (a name that reads as a
    land-cover raster or a mask would make the same pixels something else); a Sentinel-2 product named further up
    the client's path goes outermost. Each folder keeps only ``[A-Za-z0-9._-]`` (others become ``_``), at most 120
    characters, never a leading dot (``.`` and ``..`` come to nothing), so each stays one folder where it is put.
    """
    text = (filename or "")[:1000]
    parts = re.split(r"[/\\]", text)
    parts[-1] = re.sub(r"(?i)\.tiff?$", "", parts[-1])
    folders = [n for n in (_UNSAFE_NAME_CHAR.sub("_", p)[:120].lstrip(".") for p in parts[-2:]) if n]
    if (product := product_name(text)) and not any(product in f for f in folders):  # [A-Z0-9_] only: safe
        folders.insert(0, product)
    return folders


def _scrub(message: str, path: Path, tmp: Path) -> str:
    """A message without the server's temporary paths, and in the service's terms: the CLI's ``--sensor`` (named by
    the sensor recognition that both share) is the ``sensor`` filter here."""
    message = message.replace(str(path), "uploaded tile")
    for folder in (path.parent, *path.parent.parents):  # the innermost first: the others are their prefixes
        message = message.replace(str(folder), "upload folder")
        if folder == tmp:
            break
    message = re.sub(r"\bpass --sensor\b", "give the filter 'sensor'", message)
    return re.sub(r"--sensor ([\w-]+)", r"""the filter {"sensor": "\1"}""", message)


def _run_upload(engine: Any, path: Path, label: str, kwargs: dict[str, Any]) -> tuple[QueryResult, list[str]]:
    check_geotiff(path)
    try:
        return _with_warnings(engine, lambda: run_query(engine, tile=path, **kwargs))
    except (RasterioError, OSError) as e:
        raise UploadError(422, f"uploaded tile cannot be read: {first_line(e)}") from None
    except NoValidPixelsError as e:
        if kwargs.get("point") is not None:  # the point's cell: the query's own message, scrubbed
            raise
        where = f" in window {','.join(map(str, e.window))}" if e.window is not None else ""
        what = "NaN" if e.nodata is None else f"NaN or the nodata value {e.nodata:g}"
        raise UploadError(422, f"{label} holds no valid pixels{where}: every pixel of its {e.sensor} bands is {what}; "
                               f"nothing to search with") from None


class _ThreadWarnings(logging.Handler):
    """Collects the messages of the warnings (and errors) logged on the thread that made it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if threading.get_ident() == self.thread:  # handlers run on the thread that logs: other requests' are not
            self.lines.append(record.getMessage())


@contextmanager
def logged_warnings(logger: str = "rsretrieve") -> Iterator[list[str]]:
    """The messages ``logger`` and its children log at WARNING or above on this thread meanwhile, each once, in order
    (without the log's ``WARNING name:`` prefix); they still go to the server's log too."""
    handler, log_ = _ThreadWarnings(), logging.getLogger(logger)
    lines: list[str] = []
    log_.addHandler(handler)
    try:
        yield lines
    finally:
        log_.removeHandler(handler)
        lines.extend(dict.fromkeys(handler.lines))


def _with_warnings(engine: Any, query: Callable[[], QueryResult]) -> tuple[QueryResult, list[str]]:
    """``query()`` (a ``run_query`` on ``engine``, on the engine thread) and the warnings it logged: what the CLI
    prints on stderr for the same query, such as ``the index holds no sentinel2_l1c tiles: its model ... has no
    branch for it`` (without it a query for such a sensor was a 200 with no hit, the reason in the server's log only).

    The engine warns of a target sensor its model lacks once in its life (the CLI runs one query): each request here
    is told of it again, the engine's memory of what it told set aside meanwhile and kept after.
    """
    told = getattr(engine, "_told_lacking", None)  # QueryEngine.search: target sensors it warned of, once each
    if isinstance(told, set):
        engine._told_lacking = set()
    try:
        with logged_warnings() as lines:
            res = query()
    finally:
        if isinstance(told, set):
            engine._told_lacking = told | engine._told_lacking
    ws = str(getattr(engine, "workspace", "")) or None  # the server's paths are not the client's business
    return res, [line.replace(ws, "WS") if ws else line for line in lines]


def _engine_health(engine: Any) -> dict[str, Any]:
    """The fields of ``/health`` that come from the engine answering now (its model and index generation, as
    :meth:`EngineWorker.current` refreshed them)."""
    # the model's name from the same engine as its checksum (the service switches model when the index does)
    return {"model": engine.model_name, "tiles_indexed": int(engine.store.ntotal),
            "model_checksum": engine.store.model_checksum,
            "sensors": list(engine.store.sensors), "query_sensors": list(engine.model.sensors)}


def _response(res: QueryResult, warnings: list[str]) -> dict[str, Any]:
    fc = feature_collection(res.query, res.hits)
    fc["plan"] = json.loads(json.dumps(res.plan, default=_jsonable))
    fc["warnings"] = warnings  # [] when none
    return fc


def _catalog_tile(engine: Any, tile_id: int) -> dict[str, Any]:
    if not 0 <= tile_id < 2**63:
        raise ServiceError(404, f"no tile with id {tile_id} in the catalog")
    try:
        return engine.catalog.tile(tile_id)
    except KeyError:
        raise ServiceError(404, f"no tile with id {tile_id} in the catalog") from None


def _preview_png(engine: Any, tile_id: int) -> bytes:
    """PNG bytes of a catalog tile's quicklook, scaled by a whole factor to about :data:`PREVIEW_PX` pixels.

    RGBA, north up: nodata pixels (outside the scene, or nodata in its file) are transparent, so that a map page
    laying the preview over the tile's footprint shows the map there, not black that reads as dark ground.
    """
    from PIL import Image  # a dependency of matplotlib

    from rsretrieve.index.query import tile_from_catalog
    from rsretrieve.viz.quicklook import quicklook

    t = _catalog_tile(engine, tile_id)
    try:  # read as a query by this tile id reads it: the same message and status when its scene file is gone
        arr = tile_from_catalog(engine.catalog, tile_id).array
    except QueryError as e:
        raise ServiceError(422, first_line(e)) from None
    rgb = quicklook(arr, t["sensor"], alpha=True)
    f = max(1, round(PREVIEW_PX / max(rgb.shape[:2])))
    rgb = np.repeat(np.repeat(rgb, f, axis=0), f, axis=1)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _jsonable(v: object) -> object:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)
