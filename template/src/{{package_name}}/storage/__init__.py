"""Persistence: the protocols services depend on, and one package per database backend."""
