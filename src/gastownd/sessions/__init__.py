"""Agent sessions: the recorder that turns hook calls into session records (``recorder.py``) and
the spool the hook falls back on when the daemon is away (``spool.py``)."""
