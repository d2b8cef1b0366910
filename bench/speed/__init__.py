"""The speed pipeline: engines -> sweep -> roofline -> peers.

``sweep`` times every engine on model configurations and batch sizes (throughput.csv rows); ``timing`` is the
timer; ``roofline`` the FLOP counts and the device's measured peak; ``jax_peer`` the JAX implementation timed
beside the engines.
"""
