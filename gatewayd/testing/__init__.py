"""Test helpers for gatewayd and for third-party driver packages.

- `mosquitto`: a real mosquitto broker on free loopback ports (auth, TLS).
- `subscriber`: an MQTT subscriber that collects and awaits messages.
- `certs`: a throw-away CA with server and client certificates.

These need the `test` extra (`pip install 'gatewayd[test]'`) and `mosquitto` on the PATH.
"""
