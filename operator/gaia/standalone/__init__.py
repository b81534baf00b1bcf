"""Gaia on one machine (``gaia serve``, ``gaia run``): state in an embedded database,
tasks as local processes, data in a directory, events over HTTP (and Kafka if asked)."""
