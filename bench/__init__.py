"""The benchmark: the payment service over HTTP against the database's own ceiling.

Run it with ``make bench`` (or ``.venv/bin/python -m bench``); see ``bench/run.py`` for what
one run measures and ``bench/README.md`` for the definitions behind each figure.
"""
