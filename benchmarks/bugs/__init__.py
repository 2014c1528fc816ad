"""A corpus of real, public buggy training programs, re-derived in our own words.

See ``benchmarks/bugs/README.md`` for the layout and ``run.py`` for the measurement.
"""
