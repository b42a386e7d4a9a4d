"""Wire formats: one module per format, both directions, pure functions and stream translators."""
