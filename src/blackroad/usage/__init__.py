"""Usage of this node: what it served, as Prometheus metrics (``metrics.py``)."""
