"""Amaranth generators of the accelerator's units, one unit per module."""
