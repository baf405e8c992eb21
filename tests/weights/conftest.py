"""Fixtures of the weights tests: a local Hub server, a private card registry, a tiny
transformers model."""

from support.hub import cards, server, transformers_model  # noqa: F401
