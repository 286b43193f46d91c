"""Storage: SQLAlchemy models, the database, migrations, the event writer, JSON encoding and redaction."""
