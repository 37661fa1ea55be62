"""Shared fixtures. Fixture modules are plugins so each stays small and owned."""

pytest_plugins = ["tests.rtsp_fixtures", "tests.db_fixtures"]
