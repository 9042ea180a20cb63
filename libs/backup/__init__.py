"""Extract and restore a whole cluster (docs/decisions/0011-extract-restore-gc.md)."""

from libs.backup.extract import extract, extract_frames, reaction_floors
from libs.backup.frames import (
    FORMAT_VERSION,
    MAGIC,
    MAX_FRAME_BYTES,
    Checksum,
    decode_frames,
    decode_frames_raw,
    encode_frames,
)
from libs.backup.restore import (
    RestoreProgress,
    RestoreSummary,
    check_header,
    restore,
    restore_and_wait,
    restore_frames,
)

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_FRAME_BYTES",
    "Checksum",
    "RestoreProgress",
    "RestoreSummary",
    "check_header",
    "decode_frames",
    "decode_frames_raw",
    "encode_frames",
    "extract",
    "extract_frames",
    "reaction_floors",
    "restore",
    "restore_and_wait",
    "restore_frames",
]
