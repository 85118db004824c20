"""Running the hub: configuration, secrets, logs, privacy, health and the `doctor` checks.

- `config`: the TOML config file, validated at start (one line per error, exit 2).
- `credentials`: secrets from files or the environment; `privacy`: redaction of identifiers.
- `logs`: structured logging; `health/`: systemd notify and the watchdog; `doctor/`: the checks.
"""
