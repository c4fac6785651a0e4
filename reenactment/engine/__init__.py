"""Reenactment engine: X-NeMo networks, checkpoint loading, media handling and the CLI.

This package deliberately imports nothing heavy (no Django, no torch) at import time so that
``python -m reenactment.engine --help`` and the web process stay cheap. Import the
sub-modules you need explicitly:

* :mod:`reenactment.engine.networks` - the X-NeMo networks and the reference-attention helper,
* :mod:`reenactment.engine.loading` - safe checkpoint loading, compatibility reports, checksums,
* :mod:`reenactment.engine.configs` - the full-size official configurations.
"""

__all__: list[str] = []
