"""The ``gateway`` command: runs each process of the gateway (or all of them) and manages its store.

It is where each process is put together: settings are loaded once here and passed in, and the
Celery dispatch is built here and handed to the api and the scheduler (``shared.dispatch``).
"""
