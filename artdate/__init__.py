"""artdate: date artworks from their images, at scale."""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/artdate/artdate"
USER_AGENT = f"artdate/{__version__} (+{PROJECT_URL})"  # every request to a museum or image server
