"""Documents that belong to one repo and go when the repo goes.

A projection's ``apply`` sees the store as of the last committed group plus
its own pending writes, but can only *query* the committed store. ``RepoKeys``
remembers the keys written in the current group (one ``View`` per group), so
deleting a repo also deletes documents created earlier in the same group."""

from __future__ import annotations

from libs.events import View
from libs.readmodels import DocumentStore


class RepoKeys:
    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        self._view: View | None = None
        self._written: dict[tuple[str, str], set[str]] = {}

    def wrote(self, view: View, collection: str, repo: str, key: str) -> None:
        if view is not self._view:
            self._view = view
            self._written = {}
        self._written.setdefault((collection, repo), set()).add(key)

    async def of_repo(self, view: View, collection: str, repo: str) -> set[str]:
        """Every key of ``repo``'s documents in ``collection`` (field ``repo``)."""
        found = {d["key"] async for d in self.store.query(collection, where={"repo": repo})}
        if view is self._view:
            found |= self._written.get((collection, repo), set())
        return found
