"""Runs: the run directory and the jobs that read and write it.

``rundir.py`` is the run directory (validation, confined paths, the one commit
primitive), with ``commit.py`` (a commit's files), ``manifest.py``, ``lock.py`` (one
writer), ``safeio.py`` (bounded reads, JSON), ``fingerprint.py`` (hashes), ``checks.py``
(``--out``, folders of runs, model files) and ``rollback.py`` (a failed job undone);
``atomic.py`` the one place bytes are written (temporary file, fsync, rename);
``trust.py`` which model code may run; ``checkpoint.py`` checkpoints as safetensors plus
JSON and the :class:`~ppl_vae.runs.checkpoint.RunCheckpointer` that ``fit`` is given;
``config.py`` the run's configuration record and the resume comparison; ``build.py``
builds a job's data and programs once; ``features.py`` a data set's feature classifier,
cached per user, and ``generation.py`` a run's generation quality in its features;
``report.py`` a run's ``report.html``; the jobs
are ``train.py``, ``evaluate.py``, ``calibrate.py``, ``analyze.py``, ``sample.py``,
``compare.py``, ``sweep.py``, ``disentangle.py`` and ``bench.py`` (``cli/`` only parses
their options and prints what they return). A new job builds through ``build.py``,
writes only through :class:`~ppl_vae.runs.rundir.RunDir` under its lock, and validates
everything before the first write.
"""
