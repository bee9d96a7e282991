"""FOCUS 1.2 chargeback export of the ledger (pure): rows, columns and the validator.

    columns.py   the columns we emit, in order: FOCUS 1.2 columns, then `x_` custom ones
    rows.py      ledger records -> one row per (charge day, provider account, workspace, SKU price,
                 token class, attribution), costs allocated to the micro-dollar
    validate.py  the spec's rules (presence, nullability, value formats, x_ prefix, ...) and the
                 reconciliation of an export with the ledger

The I/O edge is `focus/export.py` (ledger partitions in, CSV out; S3 for the daily export).
"""
