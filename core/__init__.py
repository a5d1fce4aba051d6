"""The bottom layer: the vocabulary every other package shares — statuses, gateway names, ids,
money, the data that crosses Temporal, and the settings. It imports nothing else of paysaga."""
