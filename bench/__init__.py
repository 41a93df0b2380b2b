"""The benchmark suite: chatbot measured against the bare stack it is built on.

Run ``python -m bench`` (``--quick`` for a smoke run); docs/performance.md says how to read
the figures.
"""
