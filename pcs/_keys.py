"""The names pcs stores in MLflow, in one place.

Never rename one of these without reading the old name too: runs recorded by
earlier versions of pcs must keep loading.
"""

from __future__ import annotations

FORMAT_VERSION = 1

# tags
RUN_TYPE = "pcs.run_type"
RUN_TYPE_RUN = "run"
RUN_TYPE_COMPONENT = "component_run"
RUN_TYPE_SWEEP = "sweep"
RUN_COMMAND_ID = "pcs.run_command_id"
COMPONENT = "pcs.component"
ENTRY_POINT = "pcs.entry_point"
SEED = "pcs.seed"
DEPENDS_ON = "pcs.depends_on"
RERUN_OF = "pcs.rerun_of"
IMPORTED_FROM = "pcs.imported_from"  # the run this one was imported from
ORIGIN_RUN_ID = "pcs.origin_run_id"  # the first run of a chain of imports
RETURN_VALUE_SHA256 = "pcs.return_value_sha256"
RETURN_VALUE_FORMAT = "pcs.return_value_format"
ENVIRONMENT_FINGERPRINT = "pcs.environment_fingerprint"
GRADE = "pcs.reproducibility"
GRADE_REASONS = "pcs.reproducibility_reasons"
CODE_DIRTY = "pcs.git.dirty"
PCS_RUN = "pcs.is_run"  # "True" on every run pcs makes (AgentOS's PCS_RUN_TAG)
# where a run runs, so a dead run can be told from a live one
HOST = "pcs.host"
PID = "pcs.pid"
HEARTBEAT = "pcs.heartbeat"  # epoch milliseconds, refreshed while the run runs
HEARTBEAT_INTERVAL = "pcs.heartbeat_s"  # the interval the process promised
ERROR = "pcs.error"  # "ExceptionType: one-line message" of a failed component run
ENDED_BY = "pcs.ended_by"  # why pcs ended a run: signal name, or "cleanup"
PROCESS_START = "pcs.process_start"  # "<boot id>/<start ticks>" of pcs.pid: a reused pid is not it
REVIVED = "pcs.revived"  # a run cleanup ended whose process went on: what cleanup had said
IMPORTING = "pcs.importing"  # the original id of a run whose import is in progress
SWEEP_ID = "pcs.sweep_id"
TRIAL = "pcs.trial"
SWEEP_TRIALS = "pcs.sweep_trials"  # how many trials the sweep plans
SWEEP_SUMMARY = "pcs.sweep_summary"  # JSON: trials by status
SWEEP_PLOT_METRIC = "pcs.sweep_plot_metric"
ATTEMPT = "pcs.attempt"  # which attempt at its trial a run is (1, 2, ... with retries)
PRUNED = "pcs.pruned"  # the step at which a search's pruner stopped the trial
RAY_NODE = "pcs.ray_node"  # "<address> <node id>" of the Ray node a trial ran on
BEST_TRIAL = "pcs.best_trial"  # on a sweep: the index of its best trial
BEST_RUN = "pcs.best_run_id"  # on a sweep: the run id of its best trial
VERIFICATION = "pcs.verification"  # the verdict of a verified rerun, on the new run
SEED_PARAM = "pcs.seed"  # the seed, also as an MLflow param
STDOUT_CUT = "pcs.stdout_cut_bytes"  # bytes of the entry point's output not kept
STDERR_CUT = "pcs.stderr_cut_bytes"
RETURNED_FILE = "pcs.returned_file"  # the return value named a file: its path, from the run's folder
RETURNED_FILE_SHA256 = "pcs.returned_file_sha256"  # that file's sha256 when the run ended

# MLflow's own tags
PARENT_RUN_ID = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
USER = "mlflow.user"
SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"
SOURCE_GIT_COMMIT = "mlflow.source.git.commit"
SOURCE_GIT_BRANCH = "mlflow.source.git.branch"
SOURCE_GIT_REPO_URL = "mlflow.source.git.repoURL"
NOTE = "mlflow.note.content"

# artifacts
PCS_ARTIFACT_DIR = "pcs"
RUN_COMMAND_ARTIFACT = "pcs/run_command.yaml"
SOURCE_ARTIFACT_DIR = "pcs/source"  # the snapshot by sha256: sweeps, and runs before pcs/code
CODE_FILES_DIR = "pcs/code"  # the snapshot under the files' own paths (MLflow UI browses it)
DIFF_ARTIFACT_DIR = "pcs/git_diff"
CODE_ARTIFACT = "pcs/code.yaml"
REQUIREMENTS_DIR = "pcs/requirements"
ENVIRONMENT_ARTIFACT = "pcs/environment.yaml"
ENVIRONMENT_USED_ARTIFACT = "pcs/environment_used.yaml"  # written at the end of a run
IMPORTS_ARTIFACT = "pcs/imports.yaml"  # modules the component's code imported
RETURN_VALUE_STEM = "pcs/return_value"
TRACEBACK_ARTIFACT = "pcs/traceback.txt"
STDOUT_ARTIFACT = "pcs/stdout.txt"
STDERR_ARTIFACT = "pcs/stderr.txt"
SWEEP_SPEC_ARTIFACT = "pcs/sweep.yaml"
SWEEP_COMMANDS_ARTIFACT = "pcs/sweep_commands.yaml"
SWEEP_TABLE_ARTIFACT = "pcs/sweep.csv"
SWEEP_PLOT_ARTIFACT = "pcs/sweep.svg"
SWEEP_PARALLEL_ARTIFACT = "pcs/sweep_parallel.svg"
INPUTS_ARTIFACT = "pcs/inputs.yaml"  # data files, environment variables and other runs' artifacts read
DATA_SNAPSHOT_DIR = "pcs/data"  # small data files read, by sha256, so a rerun of recorded code has them
# MLflow 3's experiment kind: its UI opens a "custom_model_development" experiment on the
# runs table (model training) rather than the GenAI overview
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"

# script runs (pcs run train.py ARGS)
DERIVED_FROM = "pcs.derived_from"  # a run of a recorded command with changed arguments: the run it came from
ARGV_PARAM = "pcs.argv"  # a script run's argv (JSON list), also in its run command
