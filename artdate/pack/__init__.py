"""Stage 1, `artdate pack`: works lists, museum exports and APIs, fetched images -> WebDataset shards."""
