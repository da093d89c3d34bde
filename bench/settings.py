"""The tests' settings plus the fan-out benchmark's subscribers."""

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench.fanout"]
