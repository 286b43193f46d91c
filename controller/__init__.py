"""Cloud-X controller: runs playbooks through ansible-runner and serves jobs, events and scans over HTTP.

Layers, each importing only those below it (checked by tests/test_layers.py): cli, app; api | runner;
services; queue; store; and config, errors, principal, scanlib beneath them all.
"""
