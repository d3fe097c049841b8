"""The evaluation half: evaluators over typed results.

- ``views``: the arrays the metrics see (prepared frozen features, adapted embeddings,
  the "mean" representation);
- ``alignment``: alignment tables (before training; per shared space);
- ``verdict``: seed 000's hypothesis with paired bootstrap intervals;
- ``retrieval``, ``transfer``: cross-modal retrieval and classifier transfer;
- ``baselines``: the closed-form shared spaces (Procrustes, CCA, perfect alignment) as a
  registry of fits with one interface;
- ``evaluators``: the registry the experiment runs on every space;
- ``records``: the typed results all of them return and ``platonic_jax.report`` renders.
See docs/experiment.md for what each number means.
"""
