"""One module per CLI command (see ladtalk/cli.py)."""
