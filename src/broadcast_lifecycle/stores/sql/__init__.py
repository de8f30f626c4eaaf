"""The SQL store's statement text, per dialect: ``postgresql`` and ``sqlite`` hold what only that
database runs, ``common`` what both run. Each statement is a named builder taking the tables (and
the dialect), so table names come from the tables; the modules that execute statements hold no SQL.
"""
