"""Azure Blob Storage's account names, container names and shared keys,
checked without loading the SDK: ``pachctl deploy microsoft`` and the
cluster's azure object store (``libs.objects.azure``) refuse the same
values with the same messages."""

from __future__ import annotations

import base64
import binascii
import re

from libs.errors import InvalidArgument

_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_CONTAINER = re.compile(r"^(?=.{3,63}$)[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]$")


def check_account(account: str) -> str:
    """An Azure storage account name: 3-24 lowercase letters and digits."""
    if not _ACCOUNT.match(account):
        raise InvalidArgument(
            f"Azure storage account name must be 3-24 lowercase letters and digits, "
            f"got {account!r}",
            account=account,
        )
    return account


def check_container(container: str) -> str:
    """An Azure container name: 3-63 lowercase letters, digits and single hyphens."""
    if not _CONTAINER.match(container):
        raise InvalidArgument(
            "Azure container name must be 3-63 lowercase letters, digits and single "
            f"hyphens, starting and ending with a letter or digit, got {container!r}",
            container=container,
        )
    return container


def check_account_key(key: str) -> str:
    """A shared key is base64 (as the portal and ``az`` show it); anything
    else could never sign a request. The key is not echoed."""
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not raw:
        raise InvalidArgument("Azure account key must be the base64 key the portal shows")
    return key
