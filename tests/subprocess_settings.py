"""tests.settings for a child process (a management command run as its own
process): the database and Redis come from the environment, as the parent test
found them."""

from __future__ import annotations

import json
import os

from .settings import *  # noqa: F403 - the test settings, overridden below

DATABASES = {"default": json.loads(os.environ["ELASTIC_SESSIONS_TEST_DATABASE"])}
ELASTIC_SESSIONS = json.loads(os.environ["ELASTIC_SESSIONS_TEST_SETTINGS"])
