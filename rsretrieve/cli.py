"""The ``rsretrieve`` command.

Exit codes: 0 success; 1 partial failure (some inputs rejected, the rest committed, each rejection reported);
2 bad usage or invalid arguments. Expected errors print one line, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn
from pathlib import Path

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad arguments or unusable inputs: printed as one line, exit code 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a job scheduler), raised like Ctrl-C so that the command stops the same way:
    its transaction rolled back, its temporary files removed, a line saying what is kept; exit code 143."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


class _Stdout:
    """``sys.stdout`` that goes quiet once its reader has gone (``rsretrieve ingest ... | head -1``): the command
    goes on, and its lines on stderr (``rejected: PATH: reason``) and its exit code stand. Before, the first write
    into the closed pipe ended the command with exit code 0 and nothing more said."""

    def __init__(self, stream: object):
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._quiet()
            except OSError as e:  # a full disk: named, for main's one line (it said "?" or the workspace); what is
                self._quiet()  # still buffered goes nowhere at exit, not into a second error and exit code 120
                raise OSError(e.errno, e.strerror, "standard output") from None
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._quiet()
            except OSError as e:
                self._quiet()
                raise OSError(e.errno, e.strerror, "standard output") from None

    def _quiet(self) -> None:
        self.gone = True
        # what is still buffered is flushed at exit: into /dev/null, not into the closed pipe; a stream without a
        # file descriptor (tests' capture) has nothing to redirect
        with contextlib.suppress(OSError, AttributeError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def _eprint(*args: object) -> None:
    print(*args, file=sys.stderr)


def _progress(enabled: bool, label: str) -> Callable[[int, int, str], None] | None:
    if not enabled:
        return None

    def show(done: int, total: int, key: str) -> None:
        width = 30
        fill = int(width * done / max(total, 1))
        sys.stderr.write(f"\r{label} [{'#' * fill}{'.' * (width - fill)}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _open_workspace(path: str):  # noqa: ANN202 (Workspace; imported lazily)
    """An existing workspace, or a one-line usage error."""
    from rsretrieve.workspace import Workspace, WorkspaceError

    try:
        return Workspace.open(path)
    except WorkspaceError as e:
        raise UsageError(str(e)) from None


# -- sensors -------------------------------------------------------------------------------------------------------
def cmd_sensors(args: argparse.Namespace) -> int:
    from rsretrieve.sensors import get_sensor, list_sensors

    if args.action == "list":
        if args.name:
            raise UsageError(f"sensors list takes no NAME; `rsretrieve sensors show {args.name}` shows one sensor")
        specs = [get_sensor(n) for n in list_sensors()]
        if args.json:
            print(json.dumps([{"name": s.name, "family": s.family, "product": s.product, "bands": s.num_bands,
                               "gsd": s.gsd, "units": s.units} for s in specs], indent=2))
            return EXIT_OK
        print(f"{'name':<15} {'family':<14} {'product':<8} {'bands':>5} {'gsd m':>6}  units")
        for s in specs:
            print(f"{s.name:<15} {s.family:<14} {s.product:<8} {s.num_bands:>5} {s.gsd:>6g}  {s.units}")
        return EXIT_OK
    if not args.name:
        raise UsageError("sensors show: which sensor? e.g. `rsretrieve sensors show sentinel2`")
    try:
        spec = get_sensor(args.name)
    except KeyError as e:
        raise UsageError(e.args[0]) from None
    if args.json:
        print(json.dumps(spec.to_dict(), indent=2))
        return EXIT_OK
    print(f"{spec.name}: {spec.description}")
    print(f"  family {spec.family}, product {spec.product}, units {spec.units}, dtype {spec.dtype}, "
          f"nodata {spec.nodata}, physical = DN * {spec.scale:g} + {spec.offset:g}")
    if (ct := spec.cloud_test) is not None:
        text = f"  cloud test: mean {spec.units} of {'/'.join(ct.bands)} above {ct.above:g} is cloud"
        if ct.snow_bands:
            text += f", unless snow (NDSI of {'/'.join(ct.snow_bands)} above {ct.snow_ndsi:g})"
        if ct.qa_classes:
            text += f"; the scene's {ct.qa_role} classes {','.join(map(str, ct.qa_classes))} add cloud"
        elif ct.qa_role:
            bits = f"bits {','.join(map(str, ct.qa_bits))} add" if len(ct.qa_bits) > 1 else f"bit {ct.qa_bits[0]} adds"
            text += f"; the scene's {ct.qa_role} {bits} cloud"
        print(text)
    if (bo := spec.baseline_offset) is not None:
        off = spec.offset + bo.offset
        print(f"  processing baseline {bo.since} and later (from the product name, tags, STAC or a sidecar JSON): "
              f"physical = DN * {spec.scale:g} {'-' if off < 0 else '+'} {abs(off):g}, layout suffix {bo.suffix}")
    print(f"  {spec.num_bands} bands ({sum(spec.valid_mask)} valid), quicklook {'/'.join(spec.rgb_bands)}, "
          f"file layouts: {', '.join(f'{k} ({len(v.bands)})' for k, v in spec.layouts.items())}")
    print(f"  {'band':<6} {'centre nm':>9} {'fwhm nm':>8} {'gsd m':>6} {'mean':>8} {'std':>7}  valid")
    shown = spec.bands if args.all or spec.num_bands <= 16 else spec.bands[:6] + spec.bands[-6:]
    for i, b in enumerate(shown):
        if not args.all and spec.num_bands > 16 and i == 6:
            print(f"  ... {spec.num_bands - 12} more (--all shows every band)")
        c = f"{b.center_nm:.1f}" if b.center_nm else (b.polarization or "-")
        f = f"{b.fwhm_nm:.1f}" if b.fwhm_nm else "-"
        print(f"  {b.name:<6} {c:>9} {f:>8} {b.gsd_m:>6g} {b.mean:>8.4g} {b.std:>7.4g}  {'yes' if b.valid else 'no'}")
    print(f"  spec: {spec.source}")
    return EXIT_OK


# -- synth ---------------------------------------------------------------------------------------------------------
def cmd_synth(args: argparse.Namespace) -> int:
    from rsretrieve.data.synthetic import make_archive

    sensors = [s.strip() for s in args.sensors.split(",") if s.strip()]
    need, have = _synth_memory(args.size_m), _available_memory()
    if have is not None and need > have:  # a digit too many was an OOM kill minutes later, the folder left half made
        raise UsageError(f"--size-m {args.size_m:.0f}: a site that large needs about {need / 2**30:.0f} GiB of memory "
                         f"to generate, {have / 2**30:.1f} GiB is available; use a smaller --size-m (and more "
                         "--scenes)")
    try:
        summary = make_archive(args.out, scenes=args.scenes, sensors=sensors, seed=args.seed, size_m=args.size_m,
                               clouds=not args.no_clouds)
    except (ValueError, KeyError) as e:
        msg = str(e.args[0] if e.args else e)
        # the generator names its Python arguments (size_m, scenes); the user typed the options that set them
        msg = re.sub(r"^(scenes|seed|size_m) ", lambda m: f"--{m[1].replace('_', '-')} ", msg)
        if re.match(r"^(no sensors given|unknown sensor |sensor ')", msg):
            msg = f"--sensors: {msg}"
        raise UsageError(msg) from None
    n_files = sum(len(s["files"]) for s in summary["scenes"])
    if args.json:
        print(json.dumps({"out": str(args.out), "sites": len(summary["scenes"]), "files": n_files}, indent=2))
    else:
        print(f"wrote {len(summary['scenes'])} sites x {len(sensors)} sensors = {n_files} scenes to {args.out} "
              f"(seed {args.seed}); land-cover truth in {Path(args.out) / 'truth'}")
    return EXIT_OK


def _synth_memory(size_m: float) -> float:
    """Bytes ``synth`` holds at its peak for sites of ``size_m`` metres (measured with the default sensors: 0.50 GB
    at 9.6 km, 3.0 GB at 28.8 km; the 10 m Sentinel-2 stack and its float intermediates dominate)."""
    return 0.19e9 + 3.4 * size_m ** 2 if math.isfinite(size_m) and size_m > 0 else 0.0


def _available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes; None where it cannot be read (not Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# -- ingest --------------------------------------------------------------------------------------------------------
def _print_summary(counts: dict) -> None:
    print(f"catalog: {counts['scenes']} scenes, {counts['tiles']} tiles on {counts['cells']} cells of "
          f"{counts['tile_m']:g} m, {counts['labelled_cells']} cells with land-cover labels")
    if counts.get("label_schemes"):
        print("label schemes: " + ", ".join(f"{k} ({n} cells)" for k, n in counts["label_schemes"].items()))
    if counts["first_acquired"]:
        print(f"acquired {counts['first_acquired']} .. {counts['last_acquired']}")
    print(f"  {'sensor':<15} {'scenes':>6} {'tiles':>7} {'cells':>7} {'valid':>6}")
    for name, c in counts["sensors"].items():
        print(f"  {name:<15} {c['scenes']:>6} {c.get('tiles', 0):>7} {c.get('cells', 0):>7} "
              f"{c.get('mean_valid_fraction', 0):>6.3f}")


def cmd_ingest(args: argparse.Namespace) -> int:
    from rsretrieve.data.ingest import ingest
    from rsretrieve.sensors import get_sensor
    from rsretrieve.workspace import Workspace, WorkspaceError

    if args.sensor:
        try:
            get_sensor(args.sensor)
        except KeyError as e:
            raise UsageError(e.args[0]) from None
    if not 0 <= args.min_coverage <= 1:
        raise UsageError(f"--min-coverage must be within 0..1, got {args.min_coverage}")
    if args.workers < 1:  # 0 or -1 ran one process, as if --workers had not been given
        raise UsageError(f"--workers must be >= 1 (processes cutting scenes in parallel), got {args.workers}")
    if args.label_scheme is not None:
        from rsretrieve.data.labels import check_scheme

        try:
            check_scheme(args.label_scheme)
        except ValueError as e:
            raise UsageError(f"--label-scheme: {e}") from None
    if args.tile_size is not None and not (math.isfinite(args.tile_size) and args.tile_size >= 1
                                           and float(args.tile_size).is_integer()):
        # cell ids carry the size in whole metres (33N_480m_r..._c...)
        raise UsageError(f"--tile-size must be > 0 metres, in whole metres, got {args.tile_size:g}")
    if not any(os.path.lexists(p) for p in args.paths):  # a typo: no workspace is made for it (a broken link is
        # not one: discover names it as such)
        raise UsageError(f"nothing to ingest: no such file or directory: {', '.join(args.paths)}"
                         + ("; --prune looks under paths that exist: give the folder that held it" if args.prune
                            else ""))
    try:
        ws = Workspace.create(args.workspace, args.tile_size)
        catalog = ws.catalog()
    except (WorkspaceError, ValueError) as e:
        raise UsageError(str(e)) from None
    with catalog:
        report = ingest(args.paths, catalog, sensor=args.sensor, min_coverage=args.min_coverage,
                        workers=args.workers, progress=_progress(sys.stderr.isatty() and not args.json, "ingest"),
                        label_scheme=args.label_scheme, prune=args.prune)
        counts = catalog.counts()
    if args.json:
        print(json.dumps({"report": report.to_dict(), "catalog": counts}, indent=2))
    else:
        print(f"ingest: {report.added} scenes added, {report.replaced} replaced, {report.skipped} already in the "
              f"catalog{_of_them(report.skipped_label_sources, report.reread)}, {report.tiles} tiles; "
              f"{report.label_sources} land-cover sources ({report.labelled_cells} cells); {len(report.problems)} "
              "rejected"
              + (f" ({report.removed} earlier version{'s' * (report.removed != 1)} taken out of the catalog)"
                 if report.removed else "") + (f"; {len(report.pruned)} pruned" if report.pruned else ""))
        _print_summary(counts)
    for p in report.retired:
        _eprint(f"taken out: {p}")
    for p in report.unseen:
        _eprint(f"not a scene now: {p}")
    for p in report.pruned:
        _eprint(f"pruned: {p}")
    for p in report.not_pruned:
        _eprint(f"not pruned: {p}")
    for p in report.problems:
        _eprint(f"rejected: {p}")
    return EXIT_PARTIAL if report.problems else EXIT_OK


def _of_them(label_sources: int, reread: int = 0) -> str:
    """``ingest``'s note on the inputs already in the catalog: how many are land-cover sources, and how many scenes
    an earlier version had catalogued and this one read again, to the same tiles."""
    parts = [f"{label_sources} of them land-cover source{'s' * (label_sources != 1)}"] * bool(label_sources)
    parts += [f"{reread} of them read again under this version's rules, unchanged"] * bool(reread)
    return f" ({'; '.join(parts)})" if parts else ""


def cmd_catalog(args: argparse.Namespace) -> int:
    ws = _open_workspace(args.workspace)
    with ws.catalog() as c:
        removed = []
        if args.remove:
            scenes = c.scenes()
            wanted = [_scene_named(name, scenes) for name in args.remove]  # all known before any is removed
            for old in {s["key"]: s for s in wanted}.values():
                n = c.remove_scene_version(old["key"], old["fingerprint"])
                if n is not None:  # else replaced or removed by an ingest meanwhile: not this version's to remove
                    removed.append({"key": old["key"], "sensor": old["sensor"], "tiles": n})
        listed = [{"key": s["key"], "sensor": s["sensor"], "acquired": s["acquired"], "tiles": s["n_tiles"]}
                  for s in sorted(c.scenes(), key=lambda s: s["key"])] if args.scenes else None
        counts = c.counts()
    if args.json:
        print(json.dumps({**counts, **({"removed": removed} if args.remove else {}),
                          **({"scene_list": listed} if listed is not None else {})}, indent=2))
        return EXIT_OK
    for r in removed:
        print(f"removed: {r['key']}: its {r['tiles']} {r['sensor']} tiles are taken out of the catalog (the next "
              "`rsretrieve index` drops their vectors; an ingest of its path adds it again)")
    for s in listed or []:
        print(f"{s['key']}\t{s['sensor']}\t{s['acquired'] or '-'}\t{s['tiles']} tiles")
    _print_summary(counts)
    return EXIT_OK


def _scene_named(name: str, scenes: list[dict]) -> dict:
    """The catalogued scene ``name`` stands for: its key as ingest prints it, else one of its band files, else one of
    its companion files (any path to it); a file two scenes share at that level is refused as ambiguous."""
    try:
        path = str(Path(name).resolve())
    except (OSError, RuntimeError):
        path = name
    levels = (lambda s: name == s["key"], lambda s: path in (s["key"], s["key"].rstrip(os.sep)),
              lambda s: path in s["files"].values(), lambda s: path in (s.get("aux") or {}).values())
    for level in levels:
        found = [s for s in scenes if level(s)]
        if len(found) > 1:
            keys = ", ".join(s["key"] for s in found)
            raise UsageError(f"--remove {name}: a file of several catalogued scenes ({keys}): name the scene by its "
                             "key; nothing was removed")
        if found:
            return found[0]
    raise UsageError(f"--remove {name}: no catalogued scene has this key or file (`rsretrieve catalog --workspace WS "
                     "--scenes` lists them); nothing was removed")


# -- export --------------------------------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    import numpy as np

    from rsretrieve.data.export import export_geoparquet

    ws = _open_workspace(args.workspace)
    if Path(args.out).suffix.lower() != ".parquet":
        raise UsageError(f"export writes GeoParquet: OUT must end in .parquet, got {args.out}")
    out = _output_path(args.out, "OUT", None)
    store = _published_index(ws, "no embeddings exported")
    emb = store.load_vectors() if store is not None else None
    with ws.catalog() as c:
        try:
            n = export_geoparquet(c, out, embeddings=emb, provenance=_provenance(ws, store) if store else None)
        except OSError as e:  # e.g. a place the temporary file cannot be created in
            raise UsageError(f"cannot write {args.out}: {e.strerror or e}") from None
        rows = c.conn.execute("SELECT tile_id, sensor FROM tiles").fetchall()
    tile_ids = np.array([r[0] for r in rows], np.int64)
    indexed = np.isin(tile_ids, emb[0]) if emb is not None else np.zeros(len(rows), bool)
    with_emb = int(indexed.sum())
    lacking: dict[str, int] = {}  # tiles without an embedding because the index's model has no branch for them
    if emb is not None and with_emb < n:
        # the index's model embeds only the sensors it has a branch for (an index of an earlier version recorded
        # them only as the sensors of its fingerprints, and a model kind without fingerprints not at all)
        known = set(store.model_sensors or store.sensor_fingerprints)
        for (_, sensor), done in zip(rows, indexed):
            if not done and known and sensor not in known:
                lacking[sensor] = lacking.get(sensor, 0) + 1
    behind = n - with_emb - sum(lacking.values()) if emb is not None else 0  # to embed by `rsretrieve index`
    if args.json:
        counts = {} if emb is None else {"embeddings": with_emb, "not_indexed": behind,
                                         "sensors_without_branch": dict(sorted(lacking.items()))}
        print(json.dumps({"out": str(args.out), "rows": n, **counts}))
        return EXIT_OK
    note = ""
    if emb is not None and with_emb < n:
        parts = [f"{behind} not indexed yet: run `rsretrieve index`"] if behind else []
        parts += [f"{v} {k} tiles, a sensor the index's model has no branch for" for k, v in sorted(lacking.items())]
        note = f" ({with_emb} with embeddings; {'; '.join(parts)})"
    print(f"wrote {n} tiles to {args.out}{note}")
    return EXIT_OK


def _provenance(ws: object, store: object) -> dict:
    """What made the vectors of the index ``store``: its model checksum and dimension, its generation, and the names
    of the workspace's trained models whose file has that checksum (none when the model was retrained since)."""
    from rsretrieve.index.indexer import model_checksum

    names = []
    for name, p in ws.trained_models().items():  # type: ignore[attr-defined]
        try:
            if model_checksum(p) == store.model_checksum:
                names.append(name)
        except OSError:
            continue
    return {"model_checksum": store.model_checksum, "models": names, "dim": int(store.dim),
            "index_generation": store.generation}


def _load_embeddings(ws: object, without: str) -> tuple | None:
    """(tile_ids, vectors) from the workspace index, or None before anything is indexed (see
    :func:`_published_index`)."""
    store = _published_index(ws, without)
    return store.load_vectors() if store is not None else None


def _published_index(ws: object, without: str) -> object | None:
    """The workspace's published index (an ``IndexStore``), or None before anything is indexed.

    While the first ``rsretrieve index`` has not finished (running, or interrupted), there is no published index:
    None, and a warning that starts with ``without`` (what the caller does without the vectors).
    """
    index_dir = Path(ws.index_dir)  # type: ignore[attr-defined]
    if not index_dir.exists():
        return None
    from rsretrieve.index.store import IndexStore

    try:
        return IndexStore.open(index_dir)
    except FileNotFoundError as e:
        _eprint(f"warning: {without}: {e}")
        return None


# -- train ---------------------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:

    if not Path(args.config).is_file():
        raise UsageError(f"--config {args.config}: " + ("not a file" if Path(args.config).exists() else "no such file"))
    ws = _open_workspace(args.workspace)
    from rsretrieve.training.cli import TrainingInterrupted, run_train

    try:
        out = run_train(args.config, ws.path, name=args.name, resume=args.resume, extra_args=args.extra,
                        progress=sys.stderr.isatty())
    except ValueError as e:
        raise UsageError(str(e)) from None
    except TrainingInterrupted as e:  # Lightning exited with 1 (Ctrl-C) or 0 (SIGTERM), with no word of --resume
        last = ws.path / "checkpoints" / args.name / "last.ckpt"
        _eprint(f"{e}: {last} holds the last completed epoch; run the same command with --resume to continue"
                if last.is_file() else f"{e} before the first epoch completed: nothing to resume; run the same "
                "command again to start over")
        return 128 + e.signum
    print(f"model written to {out}")
    return EXIT_OK


# -- evaluate ------------------------------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:

    ws = _open_workspace(args.workspace)
    from rsretrieve.evaluation.report import evaluate_workspace, format_report

    from rsretrieve.files import write_file_atomic

    names = [n.strip() for n in (args.models or "").split(",") if n.strip()]
    if args.models is not None and not names:  # else every model was evaluated, as if the flag were absent
        raise UsageError(f"--models must name at least one model, got {args.models!r}")
    if args.charts is not None and not args.charts.strip():
        raise UsageError(f"--charts needs a folder name, got {args.charts!r}")
    # the output paths are checked before the evaluation, which takes minutes on a large workspace
    out = _output_path(args.out, "--out", None) if args.out is not None else ws.path / "evaluation.json"
    own = [ws.path / "catalog.sqlite", ws.path / "index", ws.path / "checkpoints"]
    real = Path(os.path.realpath(out))  # (a cycle of links is refused by _output_path)
    if any(real == Path(os.path.realpath(o)) or Path(os.path.realpath(o)) in real.parents for o in own):
        raise UsageError(f"--out {args.out}: a file of the workspace's catalog, index or models; give another file")
    charts = _charts_dir(args.charts) if args.charts else None
    try:
        report = evaluate_workspace(ws.path, names or None)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:  # a link: the file it points to; a FIFO: written into; a missing folder: made (files.write_file_atomic)
        write_file_atomic(out, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    except OSError as e:
        raise UsageError(f"cannot write {e.filename or out}: {e.strerror or e}") from None
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if not args.json:
        print(f"(written to {out})")
    if charts is not None:
        for path in _evaluation_charts(ws, report, charts):
            print(f"wrote {path}") if not args.json else None
    return EXIT_OK


def _charts_dir(value: str) -> Path:
    """The ``--charts`` folder, checked before the evaluation runs (created when the charts are written)."""
    p = Path(value)
    if p.exists() and not p.is_dir():
        raise UsageError(f"--charts {value} is a file; give a folder (recall.png and projection.png go in it)")
    _writable_folder(p.absolute(), f"--charts {value}")
    for name in ("recall.png", "projection.png"):
        if (p / name).is_dir():
            raise UsageError(f"--charts {value}: {p / name} is a directory; the chart {name} is written there")
    return p


def _evaluation_charts(ws: object, report: dict, out: Path) -> list[Path]:
    """recall.png from the report; projection.png of the indexed vectors (when an index exists)."""
    import numpy as np

    from rsretrieve.viz.charts import embedding_projection, recall_chart

    paths = [recall_chart(report, out / "recall.png")]
    emb = _load_embeddings(ws, "no projection.png")
    if emb is None:
        return paths
    ids, vecs = emb
    with ws.catalog() as cat:  # type: ignore[attr-defined]
        # the columns the chart uses (every column of a million tiles took a gigabyte)
        rows = {t["tile_id"]: t for t in cat.tiles(columns=("tile_id", "sensor", "label_scheme", "label"))}
        names: dict[tuple[str, int], str] = {}
        for scheme, label, name in cat.conn.execute("SELECT DISTINCT scheme, label, label_name FROM cell_labels"):
            k = (scheme, label)
            if k not in names or names[k].startswith("class_"):  # a real name beats a bare code
                names[k] = name
    # tiles of scenes removed or replaced since the last `rsretrieve index` are no longer in the catalog
    keep = np.array([int(i) in rows for i in ids], bool)
    ids, vecs = ids[keep], vecs[keep]
    if len(ids) < 2:
        return paths
    sensors = np.array([rows[int(i)]["sensor"] for i in ids])
    # one colour per (scheme, class): class values of different schemes are different classes
    keys = sorted({(rows[int(i)]["label_scheme"], rows[int(i)]["label"]) for i in ids
                   if rows[int(i)]["label"] is not None})
    key_id = {k: j for j, k in enumerate(keys)}
    labels = np.array([key_id.get((rows[int(i)]["label_scheme"], rows[int(i)]["label"]), -1) for i in ids])
    several = len({k[0] for k in keys}) > 1
    label_names = [(f"{k[0]}:" if several else "") + names.get(k, f"class_{k[1]}") for k in keys]
    paths.append(embedding_projection(vecs, sensors, labels, label_names, out / "projection.png"))
    return paths


# -- index / query -------------------------------------------------------------------------------------------------
def cmd_index(args: argparse.Namespace) -> int:
    from rsretrieve.index.indexer import index_workspace, model_path
    from rsretrieve.index.store import IndexBusyError
    from rsretrieve.workspace import Workspace, WorkspaceError

    if args.factory is not None and not args.factory.strip():  # else the factory in use, as if the flag were absent
        raise UsageError(f"--factory needs a FAISS index factory string or 'auto', got {args.factory!r}")
    if args.model is not None and not args.model.strip():  # else the model of the index, as if the flag were absent
        raise UsageError(f"--model needs the name of a trained model (WS/checkpoints/NAME), got {args.model!r}")
    try:
        ws = Workspace.open(args.workspace)
        model = args.model or ws.indexed_model()
        if not args.model and model != "default":
            try:
                model_path(ws.path, model)
            except FileNotFoundError:  # the user named no model: "no trained model 'NAME'" read as if they had
                raise UsageError(f"the index was built with model {model!r}, which is no longer in "
                                 f"{ws.path / 'checkpoints'}: name the model to index with (--model NAME)") from None
        summary = index_workspace(ws.path, model_name=model, factory=args.factory or None,
                                  segment_rows=args.segment_rows, compact=args.compact,
                                  progress=_progress(sys.stderr.isatty() and not args.json, "embed"))
    except (WorkspaceError, FileNotFoundError, ValueError, IndexBusyError) as e:
        raise UsageError(str(e)) from None
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"index: {summary['added']} tiles embedded and added, {summary['removed']} removed; "
              f"{summary['total']} tiles indexed with model {summary['model']} ({summary['model_checksum']})")
        if summary["reused"]:
            print(f"  {summary['reused']} tiles of {', '.join(sorted(summary['reused_sensors']))} taken from the "
                  "previous index: this model embeds them exactly as that one did")
        for s, n in summary["skipped_sensors"].items():
            print(f"  {n} {s} tiles not indexed: the model has no {s} branch (add it: `rsretrieve train --config "
                  "configs/add_sensor.yaml`)")
        print(f"  {summary['segments']} segment{'s' if summary['segments'] != 1 else ''}"
              + (" (`--compact` merges them into one)" if summary["segments"] > 1 else ""))
    if summary.get("catalog_changed"):
        _eprint("warning: the catalog changed while this run read it (an ingest ran meanwhile): run `rsretrieve "
                "index` again to index the scenes it added or replaced")
    return EXIT_OK


def _floats(value: str | None, n: int, flag: str, what: str) -> tuple | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value.split(","))
    except ValueError:
        out = ()
    if len(out) != n:
        raise UsageError(f"{flag} must be {what}, got {value!r}")
    return out


def _output_path(value: str | None, flag: str, suffix: str | None) -> Path | None:
    """An output file (of ``query``, ``evaluate``, ``export``), checked before the command runs; its folder is made
    when the file is written."""
    if value is None:
        return None
    if not value.strip():  # Path("") is the working folder
        raise UsageError(f"{flag} needs a file name, got {value!r}")
    if value.endswith(("/", os.sep)):  # Path drops the slash: "dir/" wrote a file named dir
        raise UsageError(f"{flag} {value} ends in a slash (a folder); give a file name")
    p = Path(value)
    if suffix and p.suffix.lower() != suffix:
        raise UsageError(f"{flag} must name a {suffix} file, got {value!r}")
    if p.is_dir():
        raise UsageError(f"{flag} {value} is a directory; give a file name")
    if p.exists() and not p.is_file():  # a FIFO or a device (/dev/stdout): written into, its folder aside
        if not os.access(p, os.W_OK):
            raise UsageError(f"{flag} {value}: not writable")
        return p
    from rsretrieve.files import replaced_file

    try:  # a link: the file it points to is replaced (files.write_file_atomic), in its folder
        target = replaced_file(p)
    except OSError as e:
        raise UsageError(f"{flag} {value}: {e.strerror}") from None
    _writable_folder(target.absolute().parent, f"{flag} {value}")
    return p


def _writable_folder(folder: Path, what: str) -> None:
    """UsageError unless ``folder`` is a writable directory or can be made (its nearest existing parent is a writable
    directory). Nothing is created here: a command that fails later leaves no folder behind (the writers make it)."""
    parent = next((a for a in (folder, *folder.parents) if os.path.lexists(a)), None)
    if parent is not None and parent.is_symlink() and not parent.exists():  # a folder cannot be made in its place
        raise UsageError(f"{what}: {parent} is a broken link")
    if parent is not None and not parent.is_dir():
        raise UsageError(f"{what}: {parent} is not a directory")
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{what}: its folder is not writable" if parent == folder
                         else f"{what}: cannot create its folder: {parent} is not writable")


def cmd_query(args: argparse.Namespace) -> int:
    from rsretrieve.index.query import QueryError, score_decimals
    from rsretrieve.index.store import IndexMismatchError
    from rsretrieve.workspace import Workspace, WorkspaceError

    point = _floats(args.point, 2, "--point", "LON,LAT in degrees")
    window = _floats(args.window, 4, "--window", "COL,ROW,WIDTH,HEIGHT in pixels")
    targets = [s for s in (args.target_sensors or "").split(",") if s]
    if args.target_sensors is not None and not targets:  # else searched every sensor, as if the flag were absent
        raise UsageError(f"--target-sensors must name at least one sensor, got {args.target_sensors!r}")
    outputs = [_output_path(args.geojson, "--geojson", None), _output_path(args.png, "--png", ".png")]
    if all(outputs) and os.path.realpath(outputs[0]) == os.path.realpath(outputs[1]):
        raise UsageError(f"--geojson and --png name the same file {args.png}; give each its own")
    try:
        ws = Workspace.open(args.workspace)
        res = ws.query(args.tile, args.tile_id, sensor=args.sensor, point=point, window=window, bbox=args.bbox,
                       within=args.within, start=args.start, end=args.end, target_sensors=targets or None, k=args.k,
                       exclude_own_scene=args.exclude_own_scene, exclude_own_cell=args.exclude_own_cell,
                       one_per_cell=args.one_per_cell, model=args.model)
    except (WorkspaceError, QueryError, IndexMismatchError, FileNotFoundError, ValueError) as e:
        raise UsageError(str(e).splitlines()[0]) from None
    finally:
        if "ws" in locals():
            ws.close()
    from rsretrieve.viz.results import TileReadError, write_geojson, write_png

    q, hits, plan = res.query, res.hits, res.plan
    try:  # the contact sheet first: it reads every hit's tile, and a failure leaves no GeoJSON written either
        if outputs[1]:
            write_png(outputs[1], ws.path, q, hits)
        if outputs[0]:
            write_geojson(outputs[0], q, hits)
    except TileReadError as e:
        raise UsageError(f"--png: {e}") from None
    except OSError as e:
        raise UsageError(f"cannot write {e.filename or 'the output'}: {e.strerror or e}") from None
    if args.json:
        res.write_json(sys.stdout)
        return EXIT_OK
    print(f"query: {q.origin} ({q.sensor}{', ' + q.cell_id if q.cell_id else ''}); "
          f"search: {plan['mode']} over {plan['candidates']} candidate tiles")
    # 4 decimals, more where two neighbours that differ would print alike: a printed tie is a real one
    d = score_decimals([h.score for h in hits])
    w = max(7, d + 3)
    print(f"{'rank':>4} {'score':>{w}} {'sensor':<13} {'acquired':<20} {'cell':<24} {'tile':>7}  scene")
    for h in hits:
        print(f"{h.rank:>4} {h.score:>{w}.{d}f} {h.sensor:<13} {h.acquired or '-':<20} {h.cell_id:<24} "
              f"{h.tile_id:>7}  {Path(h.scene).name}")
    if not hits:
        print("  (no tile matches the filter)")
    for f in (args.geojson, args.png):
        if f:
            print(f"wrote {f}")
    return EXIT_OK


# -- parser --------------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error contract: one line and exit 2 (argparse prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rsretrieve", description="Multi-sensor remote-sensing scene retrieval.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("sensors", help="the sensor registry: list, show NAME")
    s.add_argument("action", choices=["list", "show"])
    s.add_argument("name", nargs="?")
    s.add_argument("--all", action="store_true", help="show every band of a hyperspectral sensor")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_sensors)

    s = sub.add_parser("synth", help="write a co-registered synthetic archive")
    s.add_argument("out", help="output folder")
    s.add_argument("--scenes", type=int, default=10, help="number of sites (each imaged by every sensor)")
    s.add_argument("--sensors", default="sentinel1,sentinel2,enmap", help="comma-separated registered sensors")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size-m", type=float, default=4800.0, help="scene side in metres (multiple of 30)")
    s.add_argument("--no-clouds", action="store_true", help="no clouds in optical scenes")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("ingest", help="add scenes (files, folders, STAC items) to a workspace catalog")
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument("--workspace", "-w", required=True)
    s.add_argument("--sensor", help="force this sensor instead of identifying each scene")
    s.add_argument("--label-scheme", help="nomenclature of the land-cover rasters of this run, e.g. corine, "
                   "esa_worldcover (default: from their RSRETRIEVE_LABEL_SCHEME tag or name); labels are only "
                   "compared within one scheme")
    s.add_argument("--tile-size", type=float, default=None,
                   help="grid cell side in metres for a new workspace (default 480)")
    s.add_argument("--min-coverage", type=float, default=0.25,
                   help="keep a tile if at least this fraction of its cell holds data (default 0.25)")
    s.add_argument("--workers", type=int, default=1, help="processes cutting scenes in parallel")
    s.add_argument("--prune", action="store_true",
                   help="also take out of the catalog the scenes under PATH whose band files are gone (deleted or "
                        "moved), and the labels of land-cover rasters under PATH that are gone; the next "
                        "`rsretrieve index` drops their vectors")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser(
        "train", help="fit the model (LightningCLI options such as --trainer.max_time pass through)",
        epilog="Any option of the config's sections passes through to LightningCLI and overrides the YAML, e.g. "
               "--trainer.max_time 00:00:04:00 (DD:HH:MM:SS), --trainer.max_epochs N, --data.batch_size N, "
               "--data.sensors '[sentinel1,sentinel2]', --model.lr 0.002, --model.pretrained WS/checkpoints/NAME/"
               "model.pt (add a sensor); see configs/*.yaml for the sections and their options.")
    s.add_argument("--config", required=True, help="an experiment YAML in configs/")
    s.add_argument("--workspace", "-w", required=True)
    s.add_argument("--name", default="default", help="checkpoints go to WS/checkpoints/NAME (default: default)")
    s.add_argument("--resume", action="store_true",
                   help="continue from WS/checkpoints/NAME/last.ckpt with the options the run was started with (only "
                        "its budget, logging and hardware may change)")
    s.set_defaults(func=cmd_train, passthrough=True)

    s = sub.add_parser("evaluate", help="recall@k / mAP@k per sensor pair on held-out tiles, with baselines")
    s.add_argument("--workspace", "-w", required=True)
    s.add_argument("--models", help="comma-separated model names (default: every trained model)")
    s.add_argument("--out", help="where to write the JSON report (default WS/evaluation.json)")
    s.add_argument("--charts", help="folder for recall.png (per sensor pair) and projection.png (embeddings)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("index", help="embed new tiles and build or update the index")
    s.add_argument("--workspace", "-w", required=True)
    s.add_argument("--model", help="trained model name (WS/checkpoints/NAME; default: the one the index was built "
                   "with, or 'default' before the first index)")
    s.add_argument("--factory", help='FAISS index factory for the ANN index of each segment, e.g. "IVF4096,PQ32", '
                   "kept for later runs; an index built with another is rebuilt (default: the one the index was "
                   "given; at first, and with \"auto\": exact below 1M vectors per segment, IVF above)")
    s.add_argument("--segment-rows", type=int, default=50_000,
                   help="rows per immutable segment (unit of progress; default 50000)")
    s.add_argument("--compact", action="store_true",
                   help="merge every segment into one (each segment costs filtered queries a little; rewrites the "
                   "index). Without it an update merges only its new segments with the smaller existing ones")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_index)

    s = sub.add_parser("query", help="query by example tile, with region / time / sensor filters")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--tile", help="a raster file (any registered sensor, any CRS) or folder of band files")
    g.add_argument("--tile-id", type=_tile_id, help="a tile of the catalog")
    s.add_argument("--workspace", "-w", required=True)
    s.add_argument("--sensor", help="sensor of --tile when it cannot be recognised")
    s.add_argument("--point", help="LON,LAT: query with the grid cell containing this point of --tile")
    s.add_argument("--window", help="COL,ROW,WIDTH,HEIGHT: query with this pixel window of --tile")
    s.add_argument("--bbox", help="W,S,E,N in degrees (W > E crosses the antimeridian)")
    s.add_argument("--within", help="a GeoJSON file: Polygon or MultiPolygon (Feature/FeatureCollection too)")
    s.add_argument("--start", help="ISO date or date-time, inclusive")
    s.add_argument("--end", help="ISO date or date-time, inclusive")
    s.add_argument("--target-sensors", help="comma-separated sensors the results may come from")
    s.add_argument("--exclude-own-scene", action="store_true", help="never return tiles of the query's scene")
    s.add_argument("--exclude-own-cell", action="store_true",
                   help="never return tiles of the query's cell (nor of a cell of another UTM zone covering most of "
                   "its ground)")
    s.add_argument("--one-per-cell", action="store_true",
                   help="only the best tile of each ground cell (a cell of another UTM zone covering most of a cell's "
                   "ground counts as it)")
    s.add_argument("-k", type=_k_value, default=10, help="number of results (default 10)")
    s.add_argument("--model", help="trained model name (WS/checkpoints/NAME; default: the one the index was built "
                   "with)")
    s.add_argument("--json", action="store_true", help="print the query, the plan and the hits as JSON")
    s.add_argument("--geojson", help="write the results' footprints with scores (opens in QGIS)")
    s.add_argument("--png", help="write a contact sheet of the query and its results")
    s.set_defaults(func=cmd_query)

    s = sub.add_parser("catalog", help="summary of a workspace catalog; list or remove its scenes")
    s.add_argument("--workspace", "-w", required=True)
    s.add_argument("--scenes", action="store_true", help="list every scene: key, sensor, acquisition time, tiles")
    s.add_argument("--remove", nargs="+", action="extend", metavar="SCENE",
                   help="take these scenes (each its key, as ingest and --scenes print it, or one of its files) out "
                        "of the catalog; the next `rsretrieve index` drops their vectors, and an ingest of their "
                        "path adds them again")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_catalog)

    s = sub.add_parser("export", help="catalog (+ embeddings) as GeoParquet")
    s.add_argument("out", metavar="OUT.parquet")
    s.add_argument("--workspace", "-w", required=True)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("serve", help="a local HTTP query service (FastAPI): POST /query, GET /health, previews")
    s.add_argument("--workspace", "-w", required=True)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--model", help="trained model name (WS/checkpoints/NAME; default: the one the index was built "
                   "with)")
    s.add_argument("--max-upload-mb", type=float, default=50.0, help="largest uploaded query tile in MB")
    s.set_defaults(func=cmd_serve)
    return p


# -- serve ---------------------------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from rsretrieve.index.query import QueryError
    from rsretrieve.index.store import IndexMismatchError
    from rsretrieve.workspace import WorkspaceError

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be within 1..65535, got {args.port}")
    if not (math.isfinite(args.max_upload_mb) and args.max_upload_mb > 0):  # inf reached create_app's own message
        raise UsageError(f"--max-upload-mb must be a number of MB > 0, got {args.max_upload_mb:g}")
    if int(args.max_upload_mb * 1e6) < 1:  # create_app's limit in whole bytes: 0, every upload refused (413)
        raise UsageError(f"--max-upload-mb must be at least 1e-06 (one byte), got {args.max_upload_mb:g}")
    import uvicorn

    from rsretrieve.serve import create_app

    # '' (every interface, both families) shown as uvicorn shows it: http://:8000 read as a broken address
    host = f"[{args.host}]" if ":" in args.host else args.host or "0.0.0.0"
    # the address first: a port in use or a host that does not resolve is one line and exit 2, before loading
    socks = _listen(args.host, args.port, host)
    try:
        try:
            app = create_app(args.workspace, model=args.model, max_upload_mb=args.max_upload_mb)
        except (WorkspaceError, QueryError, IndexMismatchError, FileNotFoundError, ValueError) as e:
            raise UsageError(str(e).splitlines()[0]) from None
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            _eprint(f"warning: --host {args.host or repr('')} lets other machines query this workspace (there is no "
                    "authentication)")
        health = app.state.health
        # through _Stdout, as the other commands' output (main leaves serve's stdout to uvicorn): a write error names
        # standard output, not the workspace; a reader gone leaves the service running
        print(f"serving {args.workspace} (model {health['model']}, {health['tiles_indexed']} tiles) on "
              f"http://{host}:{args.port} (docs at /docs); Ctrl-C stops", file=_Stdout(sys.stdout), flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level=["warning", "info", "debug"][min(args.verbose, 2)]))
        # uvicorn raises the signal that stopped it again once stopped: SIGTERM kills (143), as uvicorn.run; and
        # Ctrl-C's KeyboardInterrupt ends here: exit 0, as uvicorn.run
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=socks)
    finally:
        for sock in socks:
            sock.close()
    if not server.started:  # uvicorn said why (a lifespan error, say)
        _eprint("rsretrieve serve: error: the service did not start (see above)")
        return EXIT_USAGE
    return EXIT_OK


def _listen(host: str, port: int, shown: str) -> list[Any]:
    """Listening sockets on every address ``host`` resolves to (``localhost``: 127.0.0.1 and ::1, as uvicorn binds;
    ``""``: every interface), listening at once, so that a second service on the port fails here and not after
    loading.

    Raises:
        UsageError: an address that cannot be resolved or bound (a port in use), in one line.
    """
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:  # socket.gaierror included
        raise UsageError(f"cannot listen on {shown}:{port}: {e.strerror or e}") from None
    families = {info[0] for info in infos}
    socks: list[socket.socket] = []
    unusable: OSError | None = None  # an address of a family this machine lacks (IPv6 disabled: ::1, ::)
    try:
        for family, kind, proto, _, address in dict.fromkeys((i[0], i[1], i[2], None, i[4]) for i in infos):
            sock = None
            try:
                sock = socket.socket(family, kind, proto)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
                if family == socket.AF_INET6 and socket.AF_INET in families:  # each family on its own socket
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(2048)  # uvicorn's backlog; two binds with SO_REUSEADDR succeed until one listens
            except OSError as e:
                if sock is not None:
                    sock.close()
                # skipped: a family the machine lacks, an IPv6 address it cannot have; a port in use stays an error,
                # and so does an IPv4 address on no interface of this machine
                if e.errno != errno.EAFNOSUPPORT and (e.errno != errno.EADDRNOTAVAIL or family != socket.AF_INET6):
                    raise
                unusable = unusable or e
                continue
            socks.append(sock)
        if not socks:
            raise unusable or OSError(errno.EADDRNOTAVAIL, "no address to listen on")
    except OSError as e:
        for sock in socks:
            sock.close()
        raise UsageError(f"cannot listen on {shown}:{port}: {e.strerror or e}") from None
    return socks


_COORD_FLAGS = ("--bbox", "--point", "--window")


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--bbox -121.7,38.0,-120.7,39.0`` -> ``--bbox=-121.7,...``: argparse would take the value for an option."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in _COORD_FLAGS and i + 1 < len(argv) and re.match(r"^-(\d|\.\d|inf|nan)", argv[i + 1], re.IGNORECASE):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def _k_value(text: str) -> int:
    """``-k`` in ASCII digits, as ``--tile-id`` (``int`` read ``1_0`` as 10); 0 and negatives are left to the query's
    own check, which names them."""
    t = text.strip()
    if not (t.lstrip("-").isascii() and t.lstrip("-").isdigit()) or len(t) > 20:
        raise argparse.ArgumentTypeError(f"k must be a positive integer, got {text!r}")
    return int(t)


def _tile_id(text: str) -> int:
    """A tile id in ASCII digits only (``int`` would also read ``1_0`` as 10 and ``+7`` or `` 7`` as 7)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) >= 2**63:
        raise argparse.ArgumentTypeError(f"a tile id is a non-negative integer in digits 0-9, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(_join_negative_values(sys.argv[1:] if argv is None else list(argv)))
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    handler = logging.StreamHandler()
    handler.setLevel(level)  # libraries with their own handlers (Lightning) must not be echoed a second time
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    from rsretrieve.data.catalog import SchemaError
    from rsretrieve.sensors import SensorSpecError

    previous, stdout = None, sys.stdout
    if args.command not in ("train", "serve"):  # Lightning and uvicorn write and handle their own output
        sys.stdout = _Stdout(stdout)
    if args.command not in ("train", "serve") and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)  # Lightning and uvicorn handle SIGTERM themselves
    try:
        code = args.func(args)
        sys.stdout.flush()  # here: a write error (a full disk) is the one-line OSError below; a reader gone, quiet
        return code
    except (UsageError, SchemaError, SensorSpecError) as e:  # a bad sensor YAML names its file and field
        _eprint(f"rsretrieve {args.command}: error: {e}")
        return EXIT_USAGE
    except BrokenPipeError:  # stderr's reader gone too: nothing more can be said (stdout's is _Stdout's)
        return EXIT_OK
    except OSError as e:  # an output path that cannot be written, a workspace in a read-only place, ...
        logging.getLogger("rsretrieve").debug("%s failed", args.command, exc_info=True)
        where = e.filename or getattr(args, "workspace", None) or "?"
        _eprint(f"rsretrieve {args.command}: error: {where}: {e.strerror or e}")
        return EXIT_USAGE
    except sqlite3.DatabaseError as e:
        logging.getLogger("rsretrieve").debug("%s failed", args.command, exc_info=True)
        ws = getattr(args, "workspace", None)
        where = Path(ws) / "catalog.sqlite" if ws else "the catalog"
        if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):  # busy, not damaged
            _eprint(f"rsretrieve {args.command}: error: {where} is busy: another process (an ingest?) held its write "
                    f"lock for the 60 s this one waited ({e}); run it again when that one has finished")
        else:
            _eprint(f"rsretrieve {args.command}: error: {where} is not a readable rsretrieve catalog ({e})")
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        how = "interrupted by SIGTERM" if isinstance(e, Terminated) else "interrupted"
        if args.command == "export":  # it writes OUT whole or not at all
            _eprint(f"{how}: {args.out} was not written (a file there before is left as it was); run the same "
                    "command again")
        else:
            _eprint(f"{how}: everything committed so far is kept; run the same command again to continue")
        return 128 + signal.SIGTERM if isinstance(e, Terminated) else 130
    finally:
        try:  # an error path's buffered output: a reader gone or a full disk is quiet here (its own error and exit
            with contextlib.suppress(OSError):  # code stand), not "Exception ignored" and exit 120 at the exit flush
                sys.stdout.flush()
        finally:
            sys.stdout = stdout
        if previous is not None:  # main() called in-process (tests, scripts): the caller's handler again
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
