"""What the embedded ILS needs from each database: SQL dialects, a PostgreSQL connection pool, sqlite's commit stamp."""
