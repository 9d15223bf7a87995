"""mtlbench: a benchmark of multi-task task-weighting strategies on chest X-ray classification.

Packages: `mtlbench.methods` (the weighting methods and their contract), `mtlbench.datasets`
(loaders returning three splits), `mtlbench.training` (one run, from config to stored result),
`mtlbench.results` (the SQLite results database: schema, writes, typed readers, leases, export),
`mtlbench.report` (tables, figures, statistics from the database alone), `mtlbench.commands`
(one module per subcommand; `mtlbench.cli` assembles them). Modules here hold the harness they
share: the run configuration (config, plan, hyperparams), registries and plugins, gradient spaces
and the per-task gradient engine (spaces, grads), the model, batches, task_metrics (per-task
metrics of one evaluation), checkpoints, costs (timing and memory measurement) and backend, the
sweep and its end-of-run table (sweep, sweep_table), tuning (plan, no torch) and tune (its run).

Imports: torch-free modules (config, plan, hyperparams, registry, plugins, spaces, errors, paths,
methods.params) never import torch at module level, so that the CLI checks its input before torch
loads; nothing below `mtlbench.report` imports training code.
"""

__version__ = "0.1.0"
