"""`mtlbench report`: tables, figures and statistics from the results database alone.

load (runs grouped by protocol, variants), stats (bootstrap, paired tests, Holm, Δm%),
weighted_metrics (metrics of a resample from tie groups), resampled (per-run metrics and their
resamples), per_run (each run's stored means, costs, whether its timings count), leaderboard (one
numeric frame per protocol), table (its formatting), figures, paper_check (the DeepChest paper's
claims against the data), leak (the patient leak: random-image against patient-wise runs on the same
test images), ladder (the DeepChest ladder's rungs), tuning (the Tuning section), sweep_summary (what the end of `mtlbench run`
may claim), render (markdown, HTML, CSV, LaTeX).

Imports: numpy, pandas, scipy, scikit-learn, matplotlib/seaborn, mtlbench.results and the method
registry; never training code, and nothing here trains.
"""
