"""What the tests share: the app and its settings, waiting for a status, ansible commands, test hosts, servers."""
