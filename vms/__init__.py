"""Hallwatch's control plane: configuration, HTTP API, health, and the command line."""
