"""Ensembles: greedy selection over model folders on validation predictions (``selection``), the
candidates and their checks (``members``), writing the folder (``build``), loading it (``model``)."""
