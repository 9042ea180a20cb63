"""The pps worker: pulls chunks of datums for one pipeline, runs each datum
(``datum.run_datum``: ``layout`` -> runner -> ``upload``) and reports them
to pps (``loop``). ``python -m services.pps.worker`` runs it."""
