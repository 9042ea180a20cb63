"""Subjects (who a token, an ACL entry or an admin is): ``robot:<name>``,
``github:<login>`` and other identity-provider prefixes, ``pipeline:<name>``,
and ``group/<name>`` in ACLs. A name without a prefix is a GitHub-style
user (Pachyderm 1.7)."""

from __future__ import annotations

import re

from libs.errors import InvalidArgument

_SUBJECT = re.compile(r"^(?:[a-z][a-z0-9_-]{0,31}:|group/)[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


def canonical(subject: str, what: str = "subject") -> str:
    subject = subject.strip()
    if subject and ":" not in subject and not subject.startswith("group/"):
        subject = f"github:{subject}"
    if not _SUBJECT.match(subject):
        raise InvalidArgument(
            f"bad {what} {subject!r}: expected robot:<name>, github:<login>, "
            "oidc:<email>, pipeline:<name> or group/<name>",
            subject=subject,
        )
    return subject
