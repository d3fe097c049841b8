"""Paired data: the synthetic platonic world (``platonic_jax.data.synthetic``)."""
