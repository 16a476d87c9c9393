"""Config loading: precedence, and errors that name the bad key and where it came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import CoordinatorSettings, load_config, parse_labels, redacted
from common.errors import ConfigError


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "claw.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_env() -> None:
    config = load_config(None, env={})
    assert config.nats.url == "nats://127.0.0.1:4222"
    assert config.nats.prefix == "claw"
    assert config.worker.concurrency == 8


def test_file_then_env_then_flags_take_precedence(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "worker:\n  concurrency: 3\n  skills: [echo]\nnats:\n  prefix: filecluster\n")
    env = {"CLAW_WORKER_CONCURRENCY": "5", "CLAW_NATS_URL": "nats://envhost:4222"}
    config = load_config(path, env=env, overrides={"worker": {"concurrency": 7, "node_id": None}})
    assert config.worker.concurrency == 7  # flag beats env beats file
    assert config.nats.url == "nats://envhost:4222"  # env beats default
    assert config.nats.prefix == "filecluster"  # file beats default
    assert config.worker.skills == ["echo"]
    assert config.worker.node_id is None  # an unset flag does not override


def test_env_lists_and_labels_are_parsed() -> None:
    env = {"CLAW_WORKER_SKILLS": "echo, sleep", "CLAW_WORKER_LABELS": "gpu=true,zone=eu"}
    config = load_config(None, env=env)
    assert config.worker.skills == ["echo", "sleep"]
    assert config.worker.labels == {"gpu": "true", "zone": "eu"}


def test_config_path_from_env(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "log:\n  level: debug\n")
    assert load_config(None, env={"CLAW_CONFIG": str(path)}).log.level == "debug"


def test_unknown_key_in_file_is_named_with_the_known_keys(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "worker:\n  concurrensy: 3\n")
    with pytest.raises(
        ConfigError, match=r"unknown config key 'worker\.concurrensy' in config file .*known: .*concurrency"
    ):
        load_config(path, env={})


def test_unknown_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown section 'workers'"):
        load_config(_yaml(tmp_path, "workers: {}\n"), env={})


def test_bad_value_names_key_and_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'worker\.concurrency' from environment: Expected `int`"):
        load_config(None, env={"CLAW_WORKER_CONCURRENCY": "many"})
    with pytest.raises(ConfigError, match=r"'worker\.concurrency' from config file .*>= 1"):
        load_config(_yaml(tmp_path, "worker:\n  concurrency: 0\n"), env={})
    with pytest.raises(ConfigError, match=r"'nats\.prefix' from command line"):
        load_config(None, env={}, overrides={"nats": {"prefix": "Bad Prefix"}})


def test_unknown_env_setting_in_a_known_section_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown environment setting CLAW_WORKER_CONCURENCY"):
        load_config(None, env={"CLAW_WORKER_CONCURENCY": "4"})


def test_env_of_other_tools_is_ignored() -> None:
    assert load_config(None, env={"CLAW_SOMETHING_ELSE": "x", "CLAWX": "y"}).worker.concurrency == 8


def test_invalid_yaml_reports_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+, column \d+"):
        load_config(_yaml(tmp_path, "worker:\n  skills: [echo\n"), env={})


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", env={})


def test_labels_must_be_key_value() -> None:
    assert parse_labels(["gpu=true", "zone = eu"]) == {"gpu": "true", "zone": "eu"}
    with pytest.raises(ConfigError, match="'gpu' is not of the form key=value"):
        parse_labels(["gpu"])


def test_secrets_are_redacted_for_logs() -> None:
    config = load_config(None, env={"CLAW_NATS_URL": "nats://alice:s3cret@host:4222", "CLAW_NATS_TOKEN": "tok"})
    shown = redacted(config)
    assert "s3cret" not in str(shown) and "tok" not in str(shown["nats"]["token"])
    assert shown["nats"]["url"] == "nats://alice:***@host:4222"


def test_example_configs_load() -> None:
    root = Path(__file__).resolve().parents[2] / "config"
    files = sorted(root.glob("*.yaml"))
    assert files, "config/ holds example configs"
    for path in files:
        if path.name != "guard.yaml":
            load_config(path, env={})


def test_every_service_of_docker_compose_has_a_valid_config() -> None:
    import yaml

    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    claw_services = {name: s for name, s in compose["services"].items() if s.get("build")}
    assert {"coordinator", "worker-1", "worker-2"} <= set(claw_services)
    for name, service in claw_services.items():
        env = {k: str(v) for k, v in service["environment"].items()}
        config = load_config(None, env=env)  # an unknown CLAW_* name would raise ConfigError here
        assert config.nats.url == "tls://nats:4222", name  # compose runs the bus over TLS
        assert (config.nats.tls.ca or "").endswith("/certs/ca.pem"), name  # the CA of `claw nats certs`
        assert (config.artifacts.backend, config.artifacts.endpoint) == ("minio", "minio:9000"), name
        assert {config.artifacts.access_key_env, config.artifacts.secret_key_env} <= set(env), name


def test_metrics_and_alert_settings_come_from_the_environment_and_are_checked() -> None:
    config = load_config(None, env={"CLAW_COORDINATOR_METRICS_PORT": "0", "CLAW_COORDINATOR_ALERT_MAX_FAILURE": "0.3"})
    assert (config.coordinator.metrics_port, config.coordinator.alert_max_failure) == (0, 0.3)
    assert load_config(None, env={}).coordinator.metrics_port is None  # off unless asked
    with pytest.raises(ConfigError, match=r"coordinator\.alert_min_completion.*environment"):
        load_config(None, env={"CLAW_COORDINATOR_ALERT_MIN_COMPLETION": "1.5"})


def test_the_default_lease_lets_a_standby_take_over_within_5_s() -> None:
    """Issue 15 asks a standby to take over within 5 s: the takeover is the rest of the killed active's
    lease (at most `lease_ttl_s`) plus the catch-up and start (0.1-0.2 s measured), so the shipped TTL
    leaves a second for those; and a renewal may be missed (or slow) without the lease running out."""
    settings = CoordinatorSettings()
    assert settings.lease_ttl_s + 1.0 <= 5.0
    assert settings.lease_renew_interval_s * 3 <= settings.lease_ttl_s
