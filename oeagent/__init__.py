"""oeagent: Opportunistic IPsec enrollment agent for libreswan."""

__version__ = "0.1.0"
