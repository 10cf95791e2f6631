"""Stage 3, `artdate score` and `artdate predict`: scoring actors over the shards, exactly once, into
results.csv with ranges and comparanda; predict for loose image files."""
