"""Agent sessions: the recorder that turns hook calls into session records (``recorder.py``,
with its outbox of log lines in ``outbox.py`` and the reader of session lines in the log in
``line_recorder.py``) and the spool the hook falls back on when the daemon is away
(``spool.py``)."""
