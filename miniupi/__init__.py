"""miniupi: a small, readable, distributed payment gateway."""

__version__ = "0.1.0"
