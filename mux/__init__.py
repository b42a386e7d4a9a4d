"""mux: a local LLM gateway. Every client format, every provider, one intermediate representation."""

__version__ = "0.1.0"
