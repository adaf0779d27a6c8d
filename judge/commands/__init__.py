"""CLI commands, one module per area. Each registers on `judge.commands.app.app` and
raises `judge.errors` exceptions; only `judge.cli` turns those into exit codes."""
