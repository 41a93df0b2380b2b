"""chatbot: a self-hosted AI chat server."""

__version__ = "0.1.0"
