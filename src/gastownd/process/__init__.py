"""The process: the ``gastownd`` command, configuration, startup refusals, the single-instance
lock, logging, service install and systemd integration, and the wiring of the parts (``app.py``)."""
