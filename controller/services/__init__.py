"""What the API and the CLI do, without Flask and without the runner: scans, deployments, host keys, policy, tokens, credentials."""
