"""Plugins used by the tests; registered by hand on a fresh plugin manager, never installed."""
