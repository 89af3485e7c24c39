"""An API instance per test, with its own data folder and Redis key namespace."""

from api_fixtures import api, api_settings

__all__ = ["api", "api_settings"]
