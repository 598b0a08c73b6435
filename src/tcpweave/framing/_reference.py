"""Plain-Python references for the framing kernels: same names, arguments, outputs, return.

``frame_runs`` is :func:`tcpweave.framing.driver.walk` -- the engine every
Python framer runs through -- driving the Python framer that the parameter
vector describes (``generic.from_spec``), so the compiled kernel is held to
the very rules Python framers get. The others state plainly what their
kernels compute. Nothing but the tests calls them.
"""

from __future__ import annotations

from tcpweave.framing.driver import walk
from tcpweave.framing.generic import from_spec


def frame_runs(
    buf,
    run_buf,
    run_off,
    run_len,
    dir_runs,
    dir_length,
    dir_flags,
    spec,
    magic,
    delim,
    resume,
    out_dir,
    out_offset,
    out_len,
    out_state,
    skipped,
):  # type: ignore[no-untyped-def]
    framer = from_spec(spec, magic, delim)
    data = bytes(buf)
    count = 0
    for d in range(int(resume[0]), len(dir_length)):
        runs = [
            (int(run_buf[r]), int(run_off[r]), int(run_len[r]))
            for r in range(dir_runs[d], dir_runs[d + 1])
        ]
        pdus, skip = walk(
            lambda b, eof: framer.frame(b, 0, eof), data, runs, int(dir_length[d]), False
        )
        if count + len(pdus) > len(out_dir):  # does not fit: stop before this direction
            resume[0] = d
            return count
        skipped[d] += skip
        for off, n, state in pdus:
            out_dir[count], out_offset[count], out_len[count], out_state[count] = d, off, n, state
            count += 1
    resume[0] = len(dir_length)
    return count


def attribute_pdus(
    pdu_dir,
    pdu_offset,
    pdu_len,
    dir_rows,
    row_offset,
    row_len,
    row_frame,
    row_ts,
    first_frame,
    last_frame,
    frames,
    first_ts,
    last_ts,
):  # type: ignore[no-untyped-def]
    orphans = 0
    for p in range(len(pdu_dir)):
        d = pdu_dir[p]
        start, end = pdu_offset[p], pdu_offset[p] + pdu_len[p]
        hit = [
            i
            for i in range(dir_rows[d], dir_rows[d + 1])
            if row_offset[i] < end and start < row_offset[i] + row_len[i]
        ]
        fs = [int(row_frame[i]) for i in hit]
        ts = [int(row_ts[i]) for i in hit]
        # a frame counts once per stretch of consecutive rows it supplies
        frames[p] = sum(1 for j, f in enumerate(fs) if j == 0 or fs[j - 1] != f)
        first_frame[p], last_frame[p] = (min(fs), max(fs)) if fs else (-1, -1)
        first_ts[p], last_ts[p] = (min(ts), max(ts)) if ts else (0, 0)
        orphans += not hit
    return orphans


def gather_pdus(
    buf, run_buf, run_off, run_len, dir_runs, pdu_dir, pdu_offset, pdu_len, data_start, data
):  # type: ignore[no-untyped-def]
    copied = 0
    for p in range(len(pdu_dir)):
        d = pdu_dir[p]
        start, end = pdu_offset[p], pdu_offset[p] + pdu_len[p]
        for r in range(dir_runs[d], dir_runs[d + 1]):
            lo, hi = max(start, run_off[r]), min(end, run_off[r] + run_len[r])
            if lo < hi:
                src = run_buf[r] + lo - run_off[r]
                dst = data_start[p] + lo - start
                data[dst : dst + hi - lo] = buf[src : src + hi - lo]
                copied += hi - lo
    return copied
