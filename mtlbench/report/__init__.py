"""`mtlbench report`: tables, figures and statistics from the results database alone.

load (runs grouped by protocol, variants), stats (bootstrap and paired tests), leaderboard (one
numeric frame), table (its formatting), figures, paper_check (the DeepChest paper's claims against
the data), render (markdown, HTML, CSV, LaTeX). Imports: numpy, pandas, scipy, matplotlib/seaborn, the store and the method registry;
never training code, and nothing here trains.
"""
