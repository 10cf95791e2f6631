"""The network and what travels with it: the year head and its ranges, checkpoints, comparanda.
Imports core only."""
