"""pachctl's config file: Pachyderm 1.7's ``~/.pachyderm/config.json``
(``PACH_CONFIG`` names another path), holding the session token as
``{"v1": {"session_token": ...}}``. Written owner-only (0600), atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from libs.errors import InvalidArgument


def config_path(env: Mapping[str, str] | None = None) -> Path:
    e: Mapping[str, str] = os.environ if env is None else env
    if e.get("PACH_CONFIG"):
        return Path(e["PACH_CONFIG"])
    return Path(e.get("HOME", str(Path.home()))) / ".pachyderm" / "config.json"


def read_config(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    import json  # only when there is one (there is none until `auth login`)

    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"{path}: not a JSON config file ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{path}: not a JSON object")
    return data


def write_config(data: dict[str, Any], path: Path | None = None) -> None:
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    import json
    import tempfile  # only when writing

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def session_token() -> str:
    """The token pachctl sends (``""`` when logged out)."""
    v1 = read_config().get("v1")
    token = v1.get("session_token", "") if isinstance(v1, dict) else ""
    return token if isinstance(token, str) else ""


def set_session_token(token: str) -> None:
    data = read_config()
    v1 = data.get("v1")
    if not isinstance(v1, dict):
        v1 = {}
    if token:
        v1["session_token"] = token
    else:
        v1.pop("session_token", None)
    data["v1"] = v1
    write_config(data)
