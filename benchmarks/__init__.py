"""Session engines compared request cycle by request cycle: ``python -m benchmarks``.

Starts its own redis-server, configures Django itself, and prints figures and
ratios; see ``python -m benchmarks --help``.
"""

from __future__ import annotations
