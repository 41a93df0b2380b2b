"""chatbot's ``openai`` backend: OpenAI's chat completions API, or any server speaking it.

Install it next to chatbot and name it in ``chatbot.toml``::

    [backends.gpt]
    type = "openai"
    model = "gpt-4o-mini"        # the key is read from OPENAI_API_KEY

    [backends.local]
    type = "openai"
    model = "llama3.2"
    base_url = "http://localhost:11434/v1"   # Ollama; no key needed
"""

from __future__ import annotations

from chatbot_openai.backend import OpenAIBackend
from chatbot_openai.options import OpenAIOptions

__all__ = ["OpenAIBackend", "OpenAIOptions"]
__version__ = "0.1.0"
