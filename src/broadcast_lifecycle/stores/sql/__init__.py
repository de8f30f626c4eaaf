"""The SQL store's statement text, per dialect: ``common`` what both databases run (and the DDL of
the status CHECK and the partial indexes), ``postgresql`` (with ``postgresql_decided`` and
``postgresql_functions``) what only PostgreSQL runs, ``sqlite`` what only SQLite runs. Each
statement is a named builder taking the tables (and the dialect), so table names come from the
tables; the modules that execute statements hold no SQL. ``decided`` derives from the transition
table what a decided statement does.
"""
