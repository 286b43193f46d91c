"""Job records, claims, and the executors (local and Celery) that launch and reap worker processes."""
