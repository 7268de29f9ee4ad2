"""Federation over NATS (off unless configured): the link to the other towns (``link.py``), the
claim on this node's name (``identity.py``) and the preflight check (``check.py``)."""
