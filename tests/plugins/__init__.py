"""Plugins used by the tests: registered by hand on a fresh plugin manager, or installed for a
test through an entry point of its own."""
