"""The domain's ports on PostgreSQL, through SQLAlchemy Core and psycopg 3."""
