"""gatewayd.ops.config: TOML in, frozen typed objects out, or one single-line error.

Every error is checked for the file path, the dotted key and the reason, in the exact shape
``<file>: <key>: <reason>`` on one line.
"""

from __future__ import annotations

import dataclasses
import shutil
import textwrap
from pathlib import Path

import pytest

from certs import make_pki
from gatewayd.daemon import plan
from gatewayd.errors import ConfigError, GatewayError
from gatewayd.ops import config
from gatewayd.ops.config import (
    Config,
    DeviceConfig,
    HubConfig,
    LogConfig,
    MqttConfig,
    StoreConfig,
    SupervisorConfig,
)

HUB = '[hub]\nid = "hub1"\n'


def write(directory: Path, text: str, name: str = "gatewayd.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    path.chmod(0o600)  # a config holding a secret must not be world-readable
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config.load(path)
    return info.value


def check_error(err: ConfigError, path: Path, key: str, *reason: str) -> None:
    """The one-line `<file>: <key>: <reason>` shape, with every reason fragment present."""
    message = str(err)
    assert "\n" not in message
    assert "\r" not in message
    assert err.file == str(path)
    assert err.key == key
    prefix = f"{path}: {key}: " if key else f"{path}: "
    assert message.startswith(prefix), message
    assert message == prefix + err.reason
    assert err.reason
    for fragment in reason:
        assert fragment in err.reason, (fragment, message)


def with_hub(extra: str) -> str:
    """`extra` in a file with a valid [hub]; top-level keys go before any table header."""
    return HUB + extra if extra.startswith("[") else extra + HUB


def config_error(tmp_path: Path, text: str, key: str, *reason: str) -> ConfigError:
    path = write(tmp_path, text)
    err = load_error(path)
    check_error(err, path, key, *reason)
    return err


# --- a full valid file ------------------------------------------------------------------------


FULL = """\
[hub]
id = "kitchen-hub.01"

[store]
path = "data/readings.db"
retention_days = 30.5
synchronous = "normal"

[mqtt]
url = "mqtts://broker.example.org:8884"
username = "gw"
password_file = "secrets/mqtt.pass"
ca_file = "tls/ca.pem"
cert_file = "tls/client.pem"
key_file = "tls/client.key"
topic_root = "home/cgm"
client_id = "my-client"
protocol = "3.1.1"
keepalive = 30
inflight = 10
include_serial = true
state_interval = 2.5
backoff_max = 20

[log]
level = "debug"
format = "json"

[supervisor]
backoff_min = 0.5
backoff_max = 120

[[devices]]
id = "sim1"
driver = "simulator"
interval = 60
history = 86400.0

[[devices]]
id = "libre"
driver = "libre2"
enabled = false
mac = "AA:BB:CC:DD:EE:FF"
"""


@pytest.fixture
def full_config(tmp_path: Path) -> Path:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "mqtt.pass").write_text("  s3cret-pw \n", encoding="utf-8")
    make_pki(tmp_path / "tls")  # ca.pem, client.pem, client.key (0600)
    (tmp_path / "secrets" / "mqtt.pass").chmod(0o600)
    (tmp_path / "tls" / "client.key").chmod(0o600)
    return write(tmp_path, FULL)


def test_full_config_parses_to_expected_objects(
    full_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir("/")  # relative paths are relative to the config file, not the cwd
    cfg = config.load(full_config)
    expected = Config(
        file=full_config,
        hub=HubConfig(id="kitchen-hub.01"),
        store=StoreConfig(
            path=tmp_path / "data" / "readings.db", retention_days=30.5, synchronous="normal"
        ),
        mqtt=MqttConfig(
            host="broker.example.org",
            port=8884,
            tls=True,
            username="gw",
            password="s3cret-pw",
            ca_file=tmp_path / "tls" / "ca.pem",
            cert_file=tmp_path / "tls" / "client.pem",
            key_file=tmp_path / "tls" / "client.key",
            topic_root="home/cgm",
            client_id="my-client",
            protocol="3.1.1",
            keepalive=30,
            inflight=10,
            include_serial=True,
            state_interval=2.5,
            backoff_min=0.5,  # [supervisor] backoff_min unless set
            backoff_max=20.0,
        ),
        log=LogConfig(level="debug", format="json"),
        supervisor=SupervisorConfig(backoff_min=0.5, backoff_max=120.0),
        devices=(
            DeviceConfig(
                driver="simulator",
                id="sim1",
                enabled=True,
                options={"interval": 60, "history": 86400.0},
                key="devices[0]",
            ),
            DeviceConfig(
                driver="libre2",
                id="libre",
                enabled=False,
                options={"mac": "AA:BB:CC:DD:EE:FF"},
                key="devices[1]",
            ),
        ),
    )
    assert cfg == expected
    assert cfg.mqtt.password == "s3cret-pw"
    assert cfg.mqtt.url == "mqtts://broker.example.org:8884"
    assert isinstance(cfg.supervisor.backoff_max, float)


def test_full_config_objects_are_frozen(full_config: Path) -> None:
    cfg = config.load(full_config)
    for obj, attr in [
        (cfg, "hub"),
        (cfg.hub, "id"),
        (cfg.store, "path"),
        (cfg.mqtt, "port"),
        (cfg.log, "level"),
        (cfg.supervisor, "backoff_min"),
        (cfg.devices[0], "id"),
    ]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, attr, getattr(obj, attr))
    assert isinstance(cfg.devices, tuple)


def test_password_never_in_repr(full_config: Path) -> None:
    cfg = config.load(full_config)
    assert cfg.mqtt.password == "s3cret-pw"
    assert "s3cret-pw" not in repr(cfg)
    assert "s3cret-pw" not in repr(cfg.mqtt)
    assert "s3cret-pw" not in cfg.mqtt.url


# --- defaults ---------------------------------------------------------------------------------


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    path = write(tmp_path, HUB)
    cfg = config.load(path)
    assert cfg.file == path
    assert cfg.hub == HubConfig(id="hub1")
    assert cfg.store == StoreConfig(
        path=tmp_path / "gatewayd.db", retention_days=90.0, synchronous="full"
    )
    assert cfg.mqtt == MqttConfig(
        host="localhost",
        port=1883,
        tls=False,
        username=None,
        password=None,
        ca_file=None,
        cert_file=None,
        key_file=None,
        topic_root="gatewayd",
        client_id="gatewayd-hub1",
        protocol="5",
        keepalive=60,
        inflight=32,
        include_serial=False,
    )
    assert cfg.mqtt.url == "mqtt://localhost:1883"
    assert cfg.log == LogConfig(level="info", format="auto")
    assert cfg.supervisor == SupervisorConfig(backoff_min=1.0, backoff_max=300.0)
    assert cfg.devices == ()


def test_default_store_path_follows_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/gatewayd:/var/lib/other")
    cfg = config.load(write(tmp_path, HUB))
    assert cfg.store.path == Path("/var/lib/gatewayd/gatewayd.db")


def test_explicit_store_path_wins_over_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/gatewayd")
    cfg = config.load(write(tmp_path, HUB + '[store]\npath = "/srv/g.db"\n'))
    assert cfg.store.path == Path("/srv/g.db")


def test_store_path_expands_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = config.load(write(tmp_path, HUB + '[store]\npath = "~/g.db"\n'))
    assert cfg.store.path == tmp_path / "home" / "g.db"


def test_parse_without_file_uses_cwd_and_placeholder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    cfg = config.parse({"hub": {"id": "h"}, "store": {"path": "rel.db"}})
    assert cfg.file is None
    assert cfg.store.path == tmp_path / "rel.db"
    with pytest.raises(ConfigError) as info:
        config.parse({"hub": {"id": "a b"}})
    assert str(info.value).startswith("<config>: hub.id: ")


def test_config_error_is_a_gateway_error_and_not_retryable(tmp_path: Path) -> None:
    err = load_error(tmp_path / "missing.toml")
    assert isinstance(err, GatewayError)
    assert err.retryable is False


# --- [mqtt] url --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "port", "tls"),
    [
        ("mqtt://broker", "broker", 1883, False),
        ("mqtts://broker", "broker", 8883, True),
        ("mqtt://broker:1884", "broker", 1884, False),
        ("mqtts://10.0.0.1:9883", "10.0.0.1", 9883, True),
        ("mqtt://broker/", "broker", 1883, False),
        ("mqtt://[::1]:1885", "::1", 1885, False),
        ("mqtt://broker:65535", "broker", 65535, False),
    ],
)
def test_url_variants(tmp_path: Path, url: str, host: str, port: int, tls: bool) -> None:
    cfg = config.load(write(tmp_path, HUB + f'[mqtt]\nurl = "{url}"\n'))
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.tls) == (host, port, tls)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://broker", "must start with mqtt:// or mqtts://"),
        ("ws://broker:80", "must start with mqtt:// or mqtts://"),
        ("broker:1883", "must start with mqtt:// or mqtts://"),
        ("mqtt://user:hunter2@broker", "must not carry credentials"),
        ("mqtt://user@broker", "must not carry credentials"),
        ("mqtt://broker/topic", "mqtt[s]://host[:port] only"),
        ("mqtt://broker:1883/a/b", "mqtt[s]://host[:port] only"),
        ("mqtt://broker?qos=1", "mqtt[s]://host[:port] only"),
        ("mqtt://broker#x", "mqtt[s]://host[:port] only"),
        ("mqtt://", "has no host"),
        ("mqtt://:1883", "has no host"),
        ("mqtts:///", "has no host"),
        ("mqtt://broker:99999", "not a valid URL"),
        ("mqtt://broker:abc", "not a valid URL"),
        ("", "must not be empty"),
    ],
)
def test_bad_urls(tmp_path: Path, url: str, reason: str) -> None:
    err = config_error(tmp_path, HUB + f'[mqtt]\nurl = "{url}"\n', "mqtt.url", reason)
    assert "hunter2" not in str(err)


def test_url_list_tried_in_turn(tmp_path: Path) -> None:
    cfg = config.load(
        write(tmp_path, HUB + '[mqtt]\nurl = ["mqtts://a:8883", "mqtts://b", "mqtts://[::1]:9"]\n')
    )
    assert [(b.host, b.port, b.tls) for b in cfg.mqtt.brokers] == [
        ("a", 8883, True),
        ("b", 8883, True),
        ("::1", 9, True),
    ]
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.tls) == ("a", 8883, True)
    assert cfg.mqtt.url == "mqtts://a:8883"
    assert cfg.mqtt.urls == "mqtts://a:8883, mqtts://b:8883, mqtts://[::1]:9"


def test_single_url_has_no_alternates(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, HUB + '[mqtt]\nurl = ["mqtt://a"]\n'))
    assert cfg.mqtt.alternates == ()
    assert [b.url for b in cfg.mqtt.brokers] == ["mqtt://a:1883"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("[]", "at least one broker URL"),
        ('["mqtt://a", 1]', "must be a string or a list of strings"),
        ('["mqtt://a", "mqtts://b"]', "all mqtt:// or all mqtts://"),
        ('["mqtt://a", "mqtt://a:1883"]', "lists mqtt://a:1883 twice"),
        ('["mqtt://a", "http://b"]', "must start with mqtt:// or mqtts://"),
    ],
)
def test_bad_url_lists(tmp_path: Path, value: str, reason: str) -> None:
    config_error(tmp_path, HUB + f"[mqtt]\nurl = {value}\n", "mqtt.url", reason)


def test_mqtt_backoff_defaults_and_inheritance(tmp_path: Path) -> None:
    assert config.load(write(tmp_path, HUB)).mqtt.backoff_min == 1.0
    assert config.load(write(tmp_path, HUB)).mqtt.backoff_max <= 30.0  # issue 10: max <= 30 s
    inherited = config.load(write(tmp_path, HUB + "[supervisor]\nbackoff_min = 0.2\n")).mqtt
    assert (inherited.backoff_min, inherited.backoff_max) == (0.2, 15.0)
    own = config.load(
        write(tmp_path, HUB + "[mqtt]\nbackoff_min = 0.5\nbackoff_max = 5\n[supervisor]\n")
    ).mqtt
    assert (own.backoff_min, own.backoff_max) == (0.5, 5.0)


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        ("backoff_min = 0\n", "mqtt.backoff_min", "> 0"),
        ("backoff_max = -1\n", "mqtt.backoff_max", "> 0"),
        ("backoff_min = 10\nbackoff_max = 5\n", "mqtt.backoff_max", "must be >= backoff_min"),
        ('backoff_max = "30"\n', "mqtt.backoff_max", "must be a number"),
    ],
)
def test_bad_mqtt_backoff(tmp_path: Path, extra: str, key: str, reason: str) -> None:
    config_error(tmp_path, HUB + "[mqtt]\n" + extra, key, reason)


def test_url_must_be_a_string(tmp_path: Path) -> None:
    config_error(tmp_path, HUB + "[mqtt]\nurl = 1883\n", "mqtt.url", "must be a string", "1883")


def test_url_port_zero_is_refused(tmp_path: Path) -> None:
    config_error(tmp_path, HUB + '[mqtt]\nurl = "mqtt://broker:0"\n', "mqtt.url")


# --- password / password_file -----------------------------------------------------------------


def test_password_with_username(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, HUB + '[mqtt]\nusername = "u"\npassword = "pw"\n'))
    assert (cfg.mqtt.username, cfg.mqtt.password) == ("u", "pw")


def test_username_without_password_is_fine(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, HUB + '[mqtt]\nusername = "u"\n'))
    assert (cfg.mqtt.username, cfg.mqtt.password) == ("u", None)


def test_password_requires_username(tmp_path: Path) -> None:
    err = config_error(
        tmp_path,
        HUB + '[mqtt]\npassword = "topsecret"\n',
        "mqtt.username",
        "is required when a password is set",
    )
    assert "topsecret" not in str(err)


def test_password_and_password_file_both_set(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x\n", encoding="utf-8")
    err = config_error(
        tmp_path,
        HUB + '[mqtt]\nusername = "u"\npassword = "topsecret"\npassword_file = "pw"\n',
        "mqtt.password_file",
        "either password or password_file, not both",
    )
    assert "topsecret" not in str(err)


def test_password_file_read_and_stripped(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("\n\t secret value \r\n\n", encoding="utf-8")
    (tmp_path / "pw").chmod(0o600)
    cfg = config.load(write(tmp_path, HUB + '[mqtt]\nusername = "u"\npassword_file = "pw"\n'))
    assert cfg.mqtt.password == "secret value"


def test_password_file_absolute(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere" / "pw"
    secret.parent.mkdir()
    secret.write_text("abc", encoding="utf-8")
    secret.chmod(0o600)
    sub = tmp_path / "etc"
    sub.mkdir()
    cfg = config.load(write(sub, HUB + f'[mqtt]\nusername = "u"\npassword_file = "{secret}"\n'))
    assert cfg.mqtt.password == "abc"


def test_password_file_requires_username(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("abc", encoding="utf-8")
    config_error(tmp_path, HUB + '[mqtt]\npassword_file = "pw"\n', "mqtt.username", "is required")


@pytest.mark.parametrize("content", ["", "   \n\t\n"])
def test_password_file_empty(tmp_path: Path, content: str) -> None:
    (tmp_path / "pw").write_text(content, encoding="utf-8")
    config_error(
        tmp_path,
        HUB + '[mqtt]\nusername = "u"\npassword_file = "pw"\n',
        "mqtt.password_file",
        str(tmp_path / "pw"),
        "is empty",
    )


def test_password_file_missing(tmp_path: Path) -> None:
    config_error(
        tmp_path,
        HUB + '[mqtt]\nusername = "u"\npassword_file = "nope.pw"\n',
        "mqtt.password_file",
        "cannot read",
        str(tmp_path / "nope.pw"),
        "No such file",
    )


def test_password_file_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "pwdir").mkdir()
    config_error(
        tmp_path,
        HUB + '[mqtt]\nusername = "u"\npassword_file = "pwdir"\n',
        "mqtt.password_file",
        "cannot read",
        str(tmp_path / "pwdir"),
    )


def test_empty_password_refused(tmp_path: Path) -> None:
    config_error(
        tmp_path,
        HUB + '[mqtt]\nusername = "u"\npassword = ""\n',
        "mqtt.password",
        "must not be empty",
    )


# --- TLS files ----------------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> Path:
    """Real PEM files: ca.pem, cert.pem + key.pem, and both.pem (certificate and key in one)."""
    pki = make_pki(tmp_path / "pki")
    shutil.copy(pki.ca_cert, tmp_path / "ca.pem")
    shutil.copy(pki.client_cert, tmp_path / "cert.pem")
    shutil.copy(pki.client_key, tmp_path / "key.pem")
    shutil.copy(pki.server_key, tmp_path / "other.key")
    (tmp_path / "both.pem").write_bytes(pki.client_cert.read_bytes() + pki.client_key.read_bytes())
    for name in ("key.pem", "other.key", "both.pem"):
        (tmp_path / name).chmod(0o600)
    return tmp_path


def test_ca_file_only_with_mqtts(tls_files: Path) -> None:
    cfg = config.load(write(tls_files, HUB + '[mqtt]\nurl = "mqtts://b"\nca_file = "ca.pem"\n'))
    assert cfg.mqtt.ca_file == tls_files / "ca.pem"
    assert cfg.mqtt.cert_file is None
    assert cfg.mqtt.key_file is None


def test_cert_without_key_is_fine_when_the_cert_file_holds_the_key(tls_files: Path) -> None:
    cfg = config.load(write(tls_files, HUB + '[mqtt]\nurl = "mqtts://b"\ncert_file = "both.pem"\n'))
    assert cfg.mqtt.cert_file == tls_files / "both.pem"
    assert cfg.mqtt.key_file is None


def test_cert_and_key_files_accepted(tls_files: Path) -> None:
    cfg = config.load(
        write(
            tls_files,
            HUB + '[mqtt]\nurl = "mqtts://b"\nca_file = "ca.pem"\ncert_file = "cert.pem"\n'
            'key_file = "key.pem"\n',
        )
    )
    assert (cfg.mqtt.cert_file, cfg.mqtt.key_file) == (
        tls_files / "cert.pem",
        tls_files / "key.pem",
    )


GARBAGE_PEM = "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    ("files", "garbage", "key", "reason"),
    [
        ('ca_file = "ca.pem"', "ca.pem", "mqtt.ca_file", "not a PEM certificate"),
        (
            'cert_file = "cert.pem"\nkey_file = "key.pem"',
            "cert.pem",
            "mqtt.cert_file",
            "not a PEM certificate",
        ),
        (
            'cert_file = "cert.pem"\nkey_file = "key.pem"',
            "key.pem",
            "mqtt.key_file",
            "not a PEM private key",
        ),
        (
            'cert_file = "cert.pem"\nkey_file = "other.key"',
            None,
            "mqtt.key_file",
            "does not match the certificate",
        ),
        ('cert_file = "cert.pem"', None, "mqtt.cert_file", "holds no private key"),
    ],
)
def test_unusable_tls_files_are_config_errors(
    tls_files: Path, files: str, garbage: str | None, key: str, reason: str
) -> None:
    """Not PEM, or a key that does not match: at start, one line naming file, key and reason
    (issue 10.1)."""
    if garbage is not None:
        (tls_files / garbage).write_text(GARBAGE_PEM, encoding="utf-8")
    path = write(tls_files, HUB + f'[mqtt]\nurl = "mqtts://b"\n{files}\n')
    loaded = config.load(path)  # `gatewayd status` reads the config without the TLS files
    with pytest.raises(ConfigError) as caught:
        plan(loaded)  # what `gatewayd run` (and doctor) does at start
    check_error(caught.value, path, key, reason)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["ca_file", "cert_file", "key_file"])
def test_tls_file_must_exist(tls_files: Path, name: str) -> None:
    extra = 'cert_file = "cert.pem"\n' if name == "key_file" else ""
    config_error(
        tls_files,
        HUB + f'[mqtt]\nurl = "mqtts://b"\n{extra}{name} = "missing.pem"\n',
        f"mqtt.{name}",
        "no such file",
        str(tls_files / "missing.pem"),
    )


def test_tls_file_must_be_a_file(tls_files: Path) -> None:
    (tls_files / "adir").mkdir()
    config_error(
        tls_files,
        HUB + '[mqtt]\nurl = "mqtts://b"\nca_file = "adir"\n',
        "mqtt.ca_file",
        "no such file",
    )


@pytest.mark.parametrize(
    "files",
    [
        'ca_file = "ca.pem"',
        'cert_file = "cert.pem"',
        'cert_file = "cert.pem"\nkey_file = "key.pem"',
    ],
)
def test_tls_files_need_mqtts(tls_files: Path, files: str) -> None:
    config_error(
        tls_files,
        HUB + f'[mqtt]\nurl = "mqtt://b"\n{files}\n',
        "mqtt.url",
        "ca_file/cert_file",
        "mqtts://",
    )


def test_tls_files_need_mqtts_even_with_default_url(tls_files: Path) -> None:
    config_error(tls_files, HUB + '[mqtt]\nca_file = "ca.pem"\n', "mqtt.url", "mqtts://")


def test_key_file_without_cert_file(tls_files: Path) -> None:
    config_error(
        tls_files,
        HUB + '[mqtt]\nurl = "mqtts://b"\nkey_file = "key.pem"\n',
        "mqtt.key_file",
        "needs cert_file",
    )


# --- topic_root ---------------------------------------------------------------------------------


@pytest.mark.parametrize("root", ["a", "gatewayd", "home/cgm", "a/b/c", "x.y_z-1/Q"])
def test_topic_root_valid(tmp_path: Path, root: str) -> None:
    cfg = config.load(write(tmp_path, HUB + f'[mqtt]\ntopic_root = "{root}"\n'))
    assert cfg.mqtt.topic_root == root


@pytest.mark.parametrize(
    "root", ["/a", "a/", "a//b", "a b", "a/#", "#", "a/+/b", "+", "$SYS", "ä", "a\\tb"]
)
def test_topic_root_invalid(tmp_path: Path, root: str) -> None:
    config_error(
        tmp_path,
        HUB + f'[mqtt]\ntopic_root = "{root}"\n',
        "mqtt.topic_root",
        "must be topic levels",
    )


def test_topic_root_empty(tmp_path: Path) -> None:
    config_error(
        tmp_path, HUB + '[mqtt]\ntopic_root = ""\n', "mqtt.topic_root", "must not be empty"
    )


def test_topic_root_trailing_newline_refused(tmp_path: Path) -> None:
    config_error(
        tmp_path, HUB + '[mqtt]\ntopic_root = "gatewayd\\n"\n', "mqtt.topic_root", "must be"
    )


# --- hub id -------------------------------------------------------------------------------------


@pytest.mark.parametrize("hub_id", ["a", "A1", "hub_1.kitchen-2", "0", "x" * 64])
def test_hub_id_valid(tmp_path: Path, hub_id: str) -> None:
    cfg = config.load(write(tmp_path, f'[hub]\nid = "{hub_id}"\n'))
    assert cfg.hub.id == hub_id
    assert cfg.mqtt.client_id == f"gatewayd-{hub_id}"


@pytest.mark.parametrize(
    "hub_id",
    ["my hub", "a/b", "hub#", "hub+", "x" * 65, "-hub", ".hub", "_hub", "hüb", "a\\tb", "a:b"],
)
def test_hub_id_invalid(tmp_path: Path, hub_id: str) -> None:
    config_error(tmp_path, f'[hub]\nid = "{hub_id}"\n', "hub.id", "must be 1-64 of", "MQTT")


def test_hub_id_empty(tmp_path: Path) -> None:
    config_error(tmp_path, '[hub]\nid = ""\n', "hub.id", "must not be empty")


def test_hub_id_wrong_type(tmp_path: Path) -> None:
    config_error(tmp_path, "[hub]\nid = 7\n", "hub.id", "must be a string", "7")


def test_hub_id_required(tmp_path: Path) -> None:
    config_error(tmp_path, "[hub]\n", "hub.id", "is required")


def test_hub_one_cpu_is_on_unless_set_off(tmp_path: Path) -> None:
    assert config.load(write(tmp_path, '[hub]\nid = "h"\n')).hub.one_cpu is True
    cfg = config.load(write(tmp_path, '[hub]\nid = "h"\none_cpu = false\n'))
    assert cfg.hub.one_cpu is False


def test_hub_one_cpu_wrong_type(tmp_path: Path) -> None:
    text = '[hub]\nid = "h"\none_cpu = "yes"\n'
    config_error(tmp_path, text, "hub.one_cpu", "must be true or false")


def test_hub_table_required(tmp_path: Path) -> None:
    config_error(tmp_path, '[mqtt]\nurl = "mqtt://b"\n', "hub", "is required")


def test_hub_must_be_a_table(tmp_path: Path) -> None:
    config_error(tmp_path, 'hub = "hub1"\n', "hub", "must be a table", "[hub]")


def test_hub_id_trailing_newline_refused(tmp_path: Path) -> None:
    config_error(tmp_path, '[hub]\nid = "hub1\\n"\n', "hub.id", "must be 1-64 of")


# --- unknown keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("colour = 1\n", "colour"),
        ("[telemetry]\nport = 9100\n", "telemetry"),
        ('[mqtt]\nhots = "x"\n', "mqtt.hots"),
        ("[store]\nsize = 1\n", "store.size"),
        ("[log]\ncolour = true\n", "log.colour"),
        ("[supervisor]\nretries = 3\n", "supervisor.retries"),
    ],
)
def test_unknown_keys(tmp_path: Path, extra: str, key: str) -> None:
    config_error(tmp_path, with_hub(extra), key, "unknown key")


def test_unknown_key_in_hub(tmp_path: Path) -> None:
    config_error(tmp_path, '[hub]\nid = "h"\nname = "Kitchen"\n', "hub.name", "unknown key")


def test_devices_keep_driver_options(tmp_path: Path) -> None:
    text = HUB + textwrap.dedent(
        """\
        [[devices]]
        id = "a"
        driver = "simulator"

        [[devices]]
        id = "b"
        driver = "simulator"
        enabled = true
        interval = 60
        speed = 2.5
        bogus = "kept for the driver to refuse"
        """
    )
    cfg = config.load(write(tmp_path, text))
    first, second = cfg.devices
    assert first.options == {}
    assert second.options == {
        "interval": 60,
        "speed": 2.5,
        "bogus": "kept for the driver to refuse",
    }
    assert (second.driver, second.id, second.enabled, second.key) == (
        "simulator",
        "b",
        True,
        "devices[1]",
    )
    reader = cfg.reader(second)
    assert reader.number("interval") == 60.0
    assert reader.number("speed") == 2.5
    with pytest.raises(ConfigError) as info:
        reader.finish()
    check_error(info.value, cfg.file or Path(), "devices[1].bogus", "unknown key")
    bad = cfg.reader(second).error("interval", "must be a number > 0, got 'fast'")
    assert str(bad) == f"{cfg.file}: devices[1].interval: must be a number > 0, got 'fast'"


# --- wrong types --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        ('[mqtt]\nkeepalive = "60"\n', "mqtt.keepalive", "must be a whole number, got '60'"),
        ("[mqtt]\nkeepalive = true\n", "mqtt.keepalive", "must be a whole number, got True"),
        ("[mqtt]\nkeepalive = 60.0\n", "mqtt.keepalive", "must be a whole number, got 60.0"),
        ("[mqtt]\ninflight = false\n", "mqtt.inflight", "must be a whole number"),
        ('[store]\nretention_days = "90"\n', "store.retention_days", "must be a number"),
        ("[store]\nretention_days = true\n", "store.retention_days", "must be a number"),
        ('[supervisor]\nbackoff_min = "1"\n', "supervisor.backoff_min", "must be a number"),
        ("[supervisor]\nbackoff_max = [1]\n", "supervisor.backoff_max", "must be a number"),
        ("[mqtt]\ninclude_serial = 1\n", "mqtt.include_serial", "must be true or false, got 1"),
        ('[mqtt]\ninclude_serial = "yes"\n', "mqtt.include_serial", "must be true or false"),
        ("[log]\nlevel = 1\n", "log.level", "must be a string"),
        ("[store]\npath = 5\n", "store.path", "must be a string"),
        ("[mqtt]\nprotocol = 5\n", "mqtt.protocol", "must be a string"),
        ("[mqtt]\nclient_id = 5\n", "mqtt.client_id", "must be a string"),
        ("[mqtt]\nusername = 5\n", "mqtt.username", "must be a string"),
        ("mqtt = 5\n", "mqtt", "must be a table"),
        ('store = "x.db"\n', "store", "must be a table"),
        ("[mqtt]\nkeepalive = 1979-05-27\n", "mqtt.keepalive", "must be a whole number"),
    ],
)
def test_wrong_types(tmp_path: Path, extra: str, key: str, reason: str) -> None:
    config_error(tmp_path, with_hub(extra), key, reason)


# --- bad values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        ("[mqtt]\nkeepalive = 4\n", "mqtt.keepalive", "must be >= 5, got 4"),
        ("[mqtt]\nkeepalive = 3601\n", "mqtt.keepalive", "must be <= 3600, got 3601"),
        ("[mqtt]\ninflight = 0\n", "mqtt.inflight", "must be >= 1"),
        ("[mqtt]\ninflight = 1001\n", "mqtt.inflight", "must be <= 1000"),
        ("[mqtt]\nstate_interval = -1\n", "mqtt.state_interval", "must be >= 0"),
        ("[store]\nretention_days = 0\n", "store.retention_days", "must be > 0, got 0"),
        ("[store]\nretention_days = -1.5\n", "store.retention_days", "must be > 0"),
        ('[store]\nsynchronous = "off"\n', "store.synchronous", "one of full, normal; got 'off'"),
        ('[store]\npath = ""\n', "store.path", "must not be empty"),
        ('[mqtt]\nprotocol = "4"\n', "mqtt.protocol", "one of 5, 3.1.1"),
        ('[mqtt]\nclient_id = ""\n', "mqtt.client_id", "must not be empty"),
        ('[log]\nlevel = "verbose"\n', "log.level", "one of debug, info, warning, error"),
        ('[log]\nlevel = "INFO"\n', "log.level", "one of"),
        ('[log]\nformat = "xml"\n', "log.format", "one of auto, json, console"),
        ("[supervisor]\nbackoff_min = 0\n", "supervisor.backoff_min", "must be > 0"),
        ("[supervisor]\nbackoff_max = -1\n", "supervisor.backoff_max", "must be > 0"),
        (
            "[supervisor]\nbackoff_min = 10\nbackoff_max = 5\n",
            "supervisor.backoff_max",
            "must be >= backoff_min (10.0), got 5.0",
        ),
    ],
)
def test_bad_values(tmp_path: Path, extra: str, key: str, reason: str) -> None:
    config_error(tmp_path, HUB + extra, key, reason)


def test_boundary_values_accepted(tmp_path: Path) -> None:
    text = HUB + (
        "[mqtt]\nkeepalive = 5\ninflight = 1000\n"
        "[supervisor]\nbackoff_min = 2\nbackoff_max = 2\n"
        "[store]\nretention_days = 0.001\n"
    )
    cfg = config.load(write(tmp_path, text))
    assert (cfg.mqtt.keepalive, cfg.mqtt.inflight) == (5, 1000)
    assert cfg.supervisor == SupervisorConfig(2.0, 2.0)
    assert cfg.store.retention_days == 0.001


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("[store]\nretention_days = nan\n", "store.retention_days"),
        ("[store]\nretention_days = inf\n", "store.retention_days"),
        ("[supervisor]\nbackoff_min = nan\n", "supervisor.backoff_min"),
        ("[supervisor]\nbackoff_max = inf\n", "supervisor.backoff_max"),
    ],
)
def test_non_finite_numbers_refused(tmp_path: Path, extra: str, key: str) -> None:
    config_error(tmp_path, HUB + extra, key)


# --- devices ------------------------------------------------------------------------------------


DEVICE = '[[devices]]\nid = "{id}"\ndriver = "simulator"\n'


def test_duplicate_device_id(tmp_path: Path) -> None:
    text = HUB + DEVICE.format(id="a") + DEVICE.format(id="b") + DEVICE.format(id="a")
    config_error(tmp_path, text, "devices[2].id", "duplicate device id 'a'")


def test_device_missing_driver(tmp_path: Path) -> None:
    config_error(tmp_path, HUB + '[[devices]]\nid = "a"\n', "devices[0].driver", "is required")


def test_device_missing_id(tmp_path: Path) -> None:
    text = HUB + DEVICE.format(id="a") + '[[devices]]\ndriver = "simulator"\n'
    config_error(tmp_path, text, "devices[1].id", "is required")


@pytest.mark.parametrize("device_id", ["a b", "a/b", "a#", "a+", "x" * 65, "-a", ""])
def test_device_id_invalid(tmp_path: Path, device_id: str) -> None:
    config_error(tmp_path, HUB + DEVICE.format(id=device_id), "devices[0].id", "must")


def test_device_driver_empty(tmp_path: Path) -> None:
    config_error(
        tmp_path,
        HUB + '[[devices]]\nid = "a"\ndriver = ""\n',
        "devices[0].driver",
        "must not be empty",
    )


def test_device_enabled_wrong_type(tmp_path: Path) -> None:
    config_error(
        tmp_path,
        HUB + DEVICE.format(id="a") + 'enabled = "no"\n',
        "devices[0].enabled",
        "must be true or false, got 'no'",
    )


@pytest.mark.parametrize(
    "text",
    [
        'devices = "sim"\n',
        "devices = 3\n",
        '[devices]\nid = "a"\ndriver = "simulator"\n',
    ],
)
def test_devices_not_an_array(tmp_path: Path, text: str) -> None:
    config_error(tmp_path, with_hub(text), "devices", "must be an array of tables", "[[devices]]")


def test_devices_array_of_non_tables(tmp_path: Path) -> None:
    config_error(
        tmp_path, with_hub('devices = ["sim"]\n'), "devices[0]", "must be a table", "[[devices]]"
    )


def test_devices_empty_array(tmp_path: Path) -> None:
    assert config.load(write(tmp_path, with_hub("devices = []\n"))).devices == ()


# --- the file itself ----------------------------------------------------------------------------


def test_toml_syntax_error(tmp_path: Path) -> None:
    config_error(tmp_path, '[hub\nid = "x"\n', "", "not valid TOML", "line 1")


def test_toml_duplicate_key(tmp_path: Path) -> None:
    config_error(tmp_path, HUB + 'id = "y"\n[hub]\nid = "z"\n', "", "not valid TOML")


def test_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "gatewayd.toml"
    check_error(load_error(path), path, "", "file not found")


def test_file_is_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "conf.d"
    path.mkdir()
    check_error(load_error(path), path, "", "cannot read")


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[hub]\nid = "h\xe9"\n')
    check_error(load_error(path), path, "", "cannot read", "utf-8")


def test_empty_file(tmp_path: Path) -> None:
    config_error(tmp_path, "", "hub", "is required")


def test_load_accepts_str_path(tmp_path: Path) -> None:
    path = write(tmp_path, HUB)
    assert config.load(str(path)).file == path


def test_error_with_newline_in_path_stays_one_line(tmp_path: Path) -> None:
    config_error(
        tmp_path,
        HUB + '[mqtt]\nurl = "mqtts://b"\nca_file = "no\\nsuch.pem"\n',
        "mqtt.ca_file",
        "no such file",
    )


def test_hub_unit_is_the_unit_shown_to_people(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, '[hub]\nid = "hub1"\nunit = "mmol/L"\n'))
    assert cfg.hub == HubConfig(id="hub1", unit="mmol/L")
    config_error(
        tmp_path, '[hub]\nid = "hub1"\nunit = "mmol"\n', "hub.unit", "mg/dL, mmol/L", "'mmol'"
    )
