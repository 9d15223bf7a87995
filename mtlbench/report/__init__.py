"""`mtlbench report`: tables, figures and statistics from the results database alone."""
