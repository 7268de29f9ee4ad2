"""The Unix-socket server: connections, admission and frame accounting (``socket_server.py``) and
the rate-limited refusal log (``ratelog.py``)."""
