"""The Anthropic (Claude) backend of chatbot, registered as the ``anthropic`` backend type.

::

    [backends.claude]
    type = "anthropic"
    model = "claude-sonnet-4-5"
    # the key is read from the ANTHROPIC_API_KEY environment variable

See :class:`AnthropicBackend` for every option.
"""

from __future__ import annotations

from chatbot_anthropic.backend import AnthropicBackend

__all__ = ["AnthropicBackend"]
__version__ = "0.1.0"
