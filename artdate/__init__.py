"""artdate: date artworks from their images, at scale."""

__version__ = "0.1.0"
