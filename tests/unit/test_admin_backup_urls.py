"""``services.admin.adapters.backup_urls``: extract -u / restore -u files stay
under the backup directory, whatever the path says or links to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.config import ObjectStoreConfig
from libs.errors import InvalidArgument, NotFound, PermissionDenied
from services.admin.adapters.backup_urls import parse_backup_url, read_url, write_url


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    d = tmp_path / "backups"
    d.mkdir()
    return d


async def _chunks() -> AsyncIterator[bytes]:
    yield b"PACHEXT\x01"


def test_paths_inside_are_taken(backups: Path) -> None:
    (backups / "sub").mkdir()
    for url in (
        f"{backups}/today",
        f"file://{backups}/today",
        f"{backups}/sub/../today",
        f"{backups}/sub/deeper",
    ):
        target = parse_backup_url(url, backups)
        assert target.scheme == "file" and target.path.is_relative_to(backups.resolve()), url
    assert parse_backup_url("s3://bucket/key", backups).scheme == "s3"


def test_paths_outside_are_refused_naming_the_backup_dir(backups: Path, tmp_path: Path) -> None:
    (backups / "out").symlink_to(tmp_path)
    (backups / "shadow").symlink_to("/etc/shadow")
    for url in (
        "/tmp/x",
        "/etc/shadow",
        "file:///etc/passwd",
        f"{backups}/../x",
        f"{backups}/sub/../../x",
        f"{backups}/out/x",
        f"{backups}/shadow",
        str(backups),
        f"file://{backups}/out/x",
    ):
        with pytest.raises(PermissionDenied) as err:
            parse_backup_url(url, backups)
        assert str(backups) in str(err.value) and "PACH_BACKUP_DIR" in str(err.value), url
    for url in ("relative/x", "ftp://h/x", "", "file://otherhost/x"):
        with pytest.raises(InvalidArgument):
            parse_backup_url(url, backups)


async def test_writes_and_reads_stay_inside(backups: Path, tmp_path: Path) -> None:
    cfg = ObjectStoreConfig()
    written = await write_url(f"{backups}/a.extract", _chunks(), cfg, backups)
    assert written == 8 and (backups / "a.extract").read_bytes() == b"PACHEXT\x01"
    got = b"".join([b async for b in read_url(f"{backups}/a.extract", cfg, backups)])
    assert got == b"PACHEXT\x01"
    with pytest.raises(PermissionDenied):
        await write_url(str(tmp_path / "x"), _chunks(), cfg, backups)
    assert not (tmp_path / "x").exists()
    with pytest.raises(NotFound):
        [b async for b in read_url(f"{backups}/missing", cfg, backups)]
    (backups / "dir").mkdir()
    with pytest.raises(InvalidArgument, match="not a regular file"):
        [b async for b in read_url(f"{backups}/dir", cfg, backups)]
