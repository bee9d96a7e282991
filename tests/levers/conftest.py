"""The provider fakes and a workspace pointing at them (shared with tests/providers)."""

from tests.providers.conftest import Fakes, World, fakes, make_world, world  # noqa: F401
