"""Authorization shared by the services: the state a projection of the auth
and enterprise events builds (``state``, pure), the in-process view that
follows the event log (``view``) and the bus guard that decides each
request from it (``guard``). Import the submodules; this package re-exports
nothing so that ``state`` stays free of I/O."""
