"""output/: stream bytes, stream files + streams.jsonl, follow view, Arrow/Parquet.

Writers never buffer a stream: each kept plan row is copied from the mapped
capture to its place in the output (``os.pwrite`` at its stream offset), so
out-of-order data costs nothing and gaps stay holes (sparse) when filled.
"""

from __future__ import annotations

from tcpweave.output.streams import Chunk, Direction, Stream, build_streams

__all__ = ["Chunk", "Direction", "Stream", "build_streams"]
