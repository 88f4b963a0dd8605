"""Conformance sweeps: generated tables of what converts."""
