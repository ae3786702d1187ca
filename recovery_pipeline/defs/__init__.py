"""Dagster definitions by domain (one package per asset group; one kind per file)."""
