"""Workarounds for third-party libraries, each isolated in one module."""
