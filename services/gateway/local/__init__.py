"""The gateway's same-host read socket (``server.py``)."""
