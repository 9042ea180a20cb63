"""The byte path of put-file and get-file: bytes in, ``DataRef``s out, and back.

``FileWriter`` stores one file's stream as refs (big files as content-addressed
chunks, small ones packed; packed refs are durable only after ``flush()``),
``read_refs`` streams a byte range of a file from its refs, and ``Split``
cuts a stream for ``put-file --split line|json|sql`` (the gateway stores each
piece as it is cut). See
docs/decisions/0008-file-data.md.
"""

from __future__ import annotations

from libs.filedata.reader import file_size, read_refs, segments
from libs.filedata.split import DELIMITERS, Delimiter, Split, SqlRows, lines
from libs.filedata.writer import SMALL_FILE, FileWriter

__all__ = [
    "DELIMITERS",
    "SMALL_FILE",
    "Delimiter",
    "FileWriter",
    "Split",
    "SqlRows",
    "file_size",
    "lines",
    "read_refs",
    "segments",
]
