"""The Platonic study's measurement (Huh et al. 2024; release ``minyoungg/platonic-rep``):
every vision x language model on the WIT-1024 pairs, the calibrated alignment matrix and
the paper's figures.

    python run.py --config=configs/prh.py --workdir=runs/prh
    from platonic_jax.prh import sweep; sweep.run(config, workdir)   # -> records.Sweep

Modules, one job each: ``models`` (the release's model sets, families, file names),
``data`` (``minhuh/prh`` from its parquet files), ``release_files`` (the release's
``.pt`` feature files), ``plan`` (typed stage parameters and keys), ``validate``,
``extract`` (one model at a time into the feature store), ``layer_stats`` and
``pair_scores`` (every layer pair batched, and its permutation nulls), ``scoring`` (the
protocol for one pair), ``sweep`` (the stages in order), ``report`` / ``figures``,
``preempt`` (SIGTERM). docs/prh.md describes the protocol and its costs.
"""
