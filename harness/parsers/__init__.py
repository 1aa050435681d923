"""Parsers of the output of tools the harness drives."""
