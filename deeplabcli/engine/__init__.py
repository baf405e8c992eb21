"""Engines behind the subcommands: inference, predict, evaluate, train, distributed helpers."""
