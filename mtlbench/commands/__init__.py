"""The `mtlbench` subcommands, one module each: run, tune, report, export, data (prepare | verify),
listing (`mtlbench list`). Each module has `HELP`, `DESCRIPTION`, `add_arguments(parser)` and
`execute(args, console) -> int`; `mtlbench.cli` builds the parser from them and maps errors to exit codes.

Shared here: options (the flags that map to RunConfig fields, the preset ← file ← flags layering),
outcomes (what a finished sweep prints, SIGTERM handled like Ctrl-C).

May import: everything in mtlbench; torch-heavy modules only inside `execute`, after every check that
needs no torch, so that a wrong input is one line at once.
"""
