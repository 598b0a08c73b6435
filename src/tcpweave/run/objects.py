"""``objects``: HTTP message bodies of a capture, as objects or as files with a manifest.

Each partition finds its sessions' objects (``framing/objects.py``) a block of sessions
at a time; ``http_objects`` gathers them in stream order, and ``write_objects`` writes
them into a claimed output directory (``output/outdir.py``): one file per object under
``DIR/<stream // 1000>/``, named ``<stream>.<index>.<name from the target>``, and
``DIR/objects.jsonl``, one line per object (docs/objects.md). 206 pieces are held back
by the partitions (in the work directory when written) and put together by the driver,
since the pieces of one representation may come over several sessions.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from tcpweave import _faults as fault
from tcpweave.capture import truncated_inputs
from tcpweave.capture.inputs import check_distinct
from tcpweave.errors import Interrupted, stop_signal
from tcpweave.framing.objects import (
    DEFAULT_MAX_DECODED,
    DirectionBytes,
    HttpObject,
    assemble_ranges,
    safe_name,
    session_objects,
)
from tcpweave.output.outdir import OBJECTS_FILE, OutputDir, RunIdentity, input_identity
from tcpweave.output.streams import Direction
from tcpweave.run.driver import Run
from tcpweave.run.executors import InProcess
from tcpweave.run.partition import Partition
from tcpweave.run.settings import ROWS_PER_PARTITION, Settings

__all__ = ["ObjectsJob", "http_objects", "object_record", "write_objects"]

#: sessions whose bytes are held at once by a partition
SESSIONS_PER_BLOCK = 64
#: object files per subdirectory (by stream, as extract spreads stream files)
STREAMS_PER_DIR = 1000


def direction_bytes(d: Direction) -> DirectionBytes:
    """A direction's bytes (gaps zero-filled), its gaps, and whether it ended (FIN or RST)
    with its last byte captured."""
    gaps = tuple((g.offset, g.length) for g in d.gaps)
    tail_missing = any(o + n >= d.length for o, n in gaps)
    return DirectionBytes(d.bytes("fill"), gaps, d.close != "open" and not tail_missing)


def partition_objects(part: Partition, max_decoded: int) -> Iterator[HttpObject]:
    """The objects of the partition's sessions (206 pieces as they are), streams numbered
    globally, in stream order."""
    views = part.views()
    index = part.global_index
    for lo in range(0, len(views), SESSIONS_PER_BLOCK):
        for s in views.block(lo, lo + SESSIONS_PER_BLOCK):
            c2s, s2c = direction_bytes(s.c2s), direction_bytes(s.s2c)
            yield from session_objects(int(index[s.index]), c2s, s2c, max_decoded)


def _objects_partition(part: Partition, max_decoded: int) -> list[HttpObject]:
    return list(partition_objects(part, max_decoded))


def http_objects(run: Run, max_decoded: int = DEFAULT_MAX_DECODED) -> list[HttpObject]:
    """Every HTTP object of the run's capture, in (stream, index) order, 206 pieces put
    together where they cover their representation. Bodies are held in memory: for a
    large capture, ``write_objects`` writes them as they are found."""
    found = [o for _, share in run.map(_objects_partition, max_decoded) for o in share]
    found.sort(key=lambda o: (o.stream, o.index))
    return list(assemble_ranges(found, max_decoded))


# ----------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class ObjectsJob:
    """What every partition's writer needs (picklable)."""

    out_dir: str
    workdir: str
    ledger_dir: str
    max_decoded: int = DEFAULT_MAX_DECODED


def object_path(obj: HttpObject) -> str:
    """The object's file, relative to the output directory."""
    return (
        f"{obj.stream // STREAMS_PER_DIR:06d}/{obj.stream:08d}.{obj.index}.{safe_name(obj.target)}"
    )


def object_record(obj: HttpObject, path: str | None) -> dict[str, Any]:
    """The object's line in objects.jsonl (docs/objects.md)."""
    return {
        "stream": obj.stream,
        "index": obj.index,
        "direction": "c2s" if obj.direction == 0 else "s2c",
        "method": obj.method,
        "target": obj.target,
        "host": obj.host,
        "status": obj.status,
        "content_type": obj.content_type,
        "content_encoding": list(obj.content_encoding),
        "chunked": obj.chunked,
        "decoded": obj.decoded,
        "size": obj.size,
        "sha256": obj.sha256,
        "encoded_size": obj.encoded_size,
        "encoded_sha256": obj.encoded_sha256,
        "state": str(obj.state),
        "gaps": [list(g) for g in obj.gaps],
        "chunk_framing_kept": obj.chunked_kept,
        "content_range": list(obj.content_range) if obj.content_range else None,
        "pieces": obj.pieces,
        "etag": obj.etag,
        "decoding": obj.decoding or None,
        "paired_surely": obj.paired_surely,
        "message_offset": obj.message_offset,
        "body_offset": obj.body_offset,
        "path": path,
    }


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL


def _write_file(out_dir: str, rel: str, data: bytes, ledger: str) -> None:
    """Create ``rel`` (listed in ``ledger`` first; never over an existing file)."""
    with open(ledger, "a", encoding="utf-8") as f:
        f.write(rel + "\n")
    os.makedirs(os.path.join(out_dir, os.path.dirname(rel)), exist_ok=True)
    fd = os.open(os.path.join(out_dir, rel), _CREATE, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def write_partition(part: Partition, job: ObjectsJob) -> tuple[list[dict[str, Any]], str]:
    """Write the partition's objects; returns their records and the file (in the work
    directory) holding its 206 pieces, which the driver puts together."""
    ledger = os.path.join(job.ledger_dir, f"objects-{part.index:05d}")
    pieces = os.path.join(job.workdir, f"pieces-{part.index:05d}.pickle")
    records = []
    with open(pieces, "wb") as held:
        for obj in partition_objects(part, job.max_decoded):
            if obj.status == 206:
                pickle.dump(obj, held)
                continue
            rel = object_path(obj)
            _write_file(job.out_dir, rel, obj.data, ledger)
            records.append(object_record(obj, rel))
    part.discard()
    return records, pieces


def _read_pieces(path: str) -> Iterator[HttpObject]:
    with open(path, "rb") as f:
        while True:
            try:
                yield pickle.load(f)  # written by this run's own partitions
            except EOFError:
                return


def write_objects(
    paths: list[str],
    out_dir: str | os.PathLike[str],
    settings: Settings = Settings(),  # noqa: B008 (frozen)
    *,
    max_decoded: int = DEFAULT_MAX_DECODED,
    force: bool = False,
    rows_per_partition: int = ROWS_PER_PARTITION,
    executor: Any = None,
) -> dict[str, Any]:
    """Write every HTTP object of the capture ``paths`` into ``out_dir`` with
    ``objects.jsonl``; returns the summary manifest.json holds."""
    check_distinct(paths)
    options = (*settings.options(), ("max_decoded", max_decoded))
    identity = RunIdentity("objects", input_identity(paths), tuple(sorted(options)))
    claim = OutputDir.claim(out_dir, identity, force=force)
    job = ObjectsJob(str(out_dir), claim.workdir, claim.ledger(""), max_decoded)
    try:
        with (
            executor or InProcess() as ex,
            Run(paths, settings, ex, workdir=claim.workdir, keep_workdir=True,
                rows_per_partition=rows_per_partition) as run,
        ):  # fmt: skip
            records, summary = _write(run, job)
            fault.at("finish")
            errors = run.capture_errors()
            stats = run.decode_stats()
        cut = truncated_inputs()
        if cut:  # the run read zeros where the file was: it did not finish
            raise cut[0]
        summary["input_damage"] = {
            "records": stats.corrupt_records,
            "skipped_bytes": stats.skipped_bytes,
            "regions": [
                {"file": e.path, "offset": e.offset, "length": e.skipped, "reason": e.reason}
                for e in errors
            ],
        }
        _write_manifest(job, records)
        claim.finish({"objects": summary, "objects_file": OBJECTS_FILE})
    except BaseException as exc:
        signum = stop_signal(exc)
        if signum is not None or isinstance(exc, KeyboardInterrupt | Interrupted):
            claim.stopped("interrupted", f"stopped by signal {signum or 2}", keep_work=False)
        else:
            claim.stopped("failed", f"{type(exc).__name__}: {exc}", keep_work=False)
        raise
    return summary


def _write(run: Run, job: ObjectsJob) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    records: list[dict[str, Any]] = []
    piece_files = []
    for _, (found, pieces) in run.map(write_partition, job):
        records += found
        piece_files.append(pieces)
    pieces = sorted((o for f in piece_files for o in _read_pieces(f)),
                    key=lambda o: (o.stream, o.index))  # fmt: skip
    ledger = os.path.join(job.ledger_dir, "objects-ranges")
    for obj in assemble_ranges(pieces, job.max_decoded):
        rel = object_path(obj)
        _write_file(job.out_dir, rel, obj.data, ledger)
        records.append(object_record(obj, rel))
    for f in piece_files:
        with contextlib.suppress(FileNotFoundError):
            os.remove(f)
    records.sort(key=lambda r: (r["stream"], r["index"]))
    states: dict[str, int] = {}
    for r in records:
        states[r["state"]] = states.get(r["state"], 0) + 1
    summary = {"objects": len(records), "bytes": sum(r["size"] for r in records),
               "states": dict(sorted(states.items()))}  # fmt: skip
    return records, summary


def _write_manifest(job: ObjectsJob, records: list[dict[str, Any]]) -> None:
    """objects.jsonl, written under a temporary name and renamed into place."""
    path = os.path.join(job.out_dir, OBJECTS_FILE)
    with open(path + ".tmp", "wb") as f:
        for r in records:
            f.write(orjson.dumps(r) + b"\n")
    os.replace(path + ".tmp", path)
