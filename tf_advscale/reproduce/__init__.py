"""The paper's experiments as configs: ``advscale reproduce EXPERIMENT``.

    advscale reproduce clean_portion --dataset fmnist
    advscale reproduce report                  # writes REPRODUCTION.md

Each experiment needs some trained models ("runs": norm, clean portion,
depth, ALP, ...; one per seed) and some evaluations of them. A run is
trained with ``tf_advscale.runner`` into ``WORKDIR/DATASET/runs/KEY/seedS``
and is shared by every experiment that needs it; an evaluation is written
batch by batch into that run's ``evals/`` folder. Both resume when the
command is rerun after being killed, and give the same numbers (runs are
trained with ``deterministic=True``; attack draws are keyed by seed, attack
and batch). Each experiment then writes ``results.json``, ``table.md`` and
plots into ``RESULTS/DATASET/EXPERIMENT/`` (RESULTS defaults to WORKDIR);
``report`` gathers them into REPRODUCTION.md with the paper's numbers and a
verdict for each finding.

The package: ``plan`` (runs, evaluations, and their training and
evaluation), ``share`` (runs whose recipe is a zoo entry's use its model
instead of training), ``experiments`` (each registered in ``EXPERIMENTS``),
``diagnosis`` (the diagnosis experiment's measurements), ``stats`` (seed
statistics, verdicts, table cells), ``paper`` (the published numbers),
``plots`` (plot specs and drawing), ``report`` (``run_experiment``'s files
and REPRODUCTION.md), ``compare`` (the report's scales side by side) and
``estimate`` (``advscale reproduce plan``: what a scale will compute).

A scale's config may name the experiments it runs (``experiments``; ``all``
runs those), run some on fewer seeds (``experiment_seeds``: name -> how many
of the plan's), and keep its runs and results in a folder of its own
(``folder``: ``WORKDIR/FOLDER/DATASET``), as the medium scale does.

Verdicts (the rule is printed in the report): a finding is *reproduced in
direction* when our effect has the paper's sign and is larger than the
seed spread (sum of the two standard deviations), *in magnitude* when in
addition its relative size is within a factor of two of the paper's,
*not reproduced* when it has the opposite sign beyond the spread, and
*inconclusive* when it is within the spread.
"""

from tf_advscale.reproduce.experiments import EXPERIMENTS, PAPER, UNPLANNED, experiment
# experiments look evaluate_run up in tf_advscale.reproduce.plan: replace it there.
from tf_advscale.reproduce.plan import (BatchStatistics, Eval, Plan, Run, accuracies,
                                        evaluate_run, over_seeds, train)
from tf_advscale.reproduce.report import (_hours, _number, check_experiment, compute_cost,
                                          experiments_of, run_experiment, scale_dir,
                                          scale_summary, write_report)
from tf_advscale.reproduce.stats import _crossing_verdict, fmt, stat, verdict

__all__ = ["EXPERIMENTS", "PAPER", "UNPLANNED", "experiment", "BatchStatistics", "Eval", "Plan",
           "Run", "accuracies", "evaluate_run", "over_seeds", "train", "_hours", "_number",
           "check_experiment", "compute_cost", "experiments_of", "run_experiment", "scale_dir",
           "scale_summary", "write_report", "_crossing_verdict", "fmt", "stat", "verdict"]
