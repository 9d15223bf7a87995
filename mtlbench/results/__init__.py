"""The results database: one SQLite file holding every run, its metrics, weights, costs and predictions.

Modules: `store` (ResultsStore: connection, transactions, run claims, writes, blob codecs),
`schema` (tables, schema version, migrations), `readers` (typed reads returning pandas
DataFrames: the only SQL outside this package is in tests and benchmarks), `check` (damage
check before a database is trusted), `leases` (owner, heartbeat and pid liveness of a claimed
run), `export` (flat CSV tables).

Imports: config and errors only; nothing here imports torch, training or report code.
"""
