"""Meterline: an AI FinOps gateway that meters, attributes, limits and optimizes LLM spend."""

__version__ = "0.1.0"
