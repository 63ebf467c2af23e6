"""copyspan core: decode, describe, index, search and align videos. No Ray, no Kafka here."""

__version__ = "0.1.0"
