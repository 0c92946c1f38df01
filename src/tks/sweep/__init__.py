"""Grids of runs on an existing engine: ``tks sweep`` (docs/sweeps.md).

* ``spec``: the sweep file, read strictly, every run's config resolved before anything starts;
* ``folders``: which run folders belong to which run (by experiment, not by folder name) and what each run needs;
* ``jobs``: one run's work (train or resume, then ``tks eval``) as a job any executor can run;
* ``executors``: processes on this machine, Ray tasks, SLURM jobs through submitit;
* ``driver``: claims runs, submits their jobs, reports progress and ends with the ``tks compare`` table.
"""

from tks.sweep.driver import current_states, format_listing, run_sweep
from tks.sweep.executors import ExecutorOptions, LocalExecutor, RayExecutor, SlurmExecutor, available_cores
from tks.sweep.folders import RunState, run_state
from tks.sweep.jobs import Job, JobResult, execute_job
from tks.sweep.spec import Sweep, SweepError, SweepRun, experiment_key, load_sweep

__all__ = [
    "ExecutorOptions",
    "Job",
    "JobResult",
    "LocalExecutor",
    "RayExecutor",
    "RunState",
    "SlurmExecutor",
    "Sweep",
    "SweepError",
    "SweepRun",
    "available_cores",
    "current_states",
    "execute_job",
    "experiment_key",
    "format_listing",
    "load_sweep",
    "run_state",
    "run_sweep",
]
