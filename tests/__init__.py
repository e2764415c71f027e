"""The test suite."""

from __future__ import annotations

import pytest

# A helper module imported by a test module before pytest loads it as a plugin
# (``pytest_plugins``) would keep plain asserts: have pytest rewrite it wherever
# it is first imported.
pytest.register_assert_rewrite("tests.redis_topologies")
