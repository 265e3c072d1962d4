"""Local runtime: real PostgreSQL, Redis and embedded Milvus started on loopback ports.

Used by ``make run``/``movierec up`` and the test fixtures whenever ``DATABASE_URL``,
``REDIS_URL`` or ``MILVUS_URI`` is not set. Data lives under ``$MOVIEREC_HOME/runtime``.
"""
