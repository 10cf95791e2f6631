"""Packed data sets: the shards and their manifest, the partition of shards among ranks, the input
pipeline (decode, augment, batch) and decoding on the device. Imports core only."""
