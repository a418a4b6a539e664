"""Helpers shared by the template's tests, its CI workflow generator and its benchmarks."""
