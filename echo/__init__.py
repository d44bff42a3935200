"""ECHO: an Erlang/OTP-style supervised runtime for an organisation of LLM role agents."""

__version__ = "0.1.0"
