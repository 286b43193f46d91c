"""The worker process: one job, through ansible-runner, with one JobKind per job type."""
