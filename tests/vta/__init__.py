"""Tests of the VTA back end (a package so its conftest does not shadow tests/conftest.py)."""
