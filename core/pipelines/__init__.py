"""Composition of stages per command (encode; later tune, evaluate, analyses): the one place that
knows datasets, feature sources and results together. Everything else is a stage on arrays or a
typed object (``Dataset`` → ``FeatureSet`` → ``EncodingResult``)."""
