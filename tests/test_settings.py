"""The service's settings (service/settings.py): every ATELIER_* variable parsed once, a bad
value refused by name, and the README's configuration table naming every one."""

from __future__ import annotations

import re

import pytest

from bench.pipeline import REPO
from service.settings import NAMES, Settings, SettingsError


def test_defaults_when_nothing_is_set():
    s = Settings.from_environment({})
    assert s == Settings(exports=s.exports) and s.exports.name == "exports" and not s.api_keys


@pytest.mark.parametrize(
    "name, value, field, expected",
    [
        ("ATELIER_PROVIDERS", " CPU , cuda", "providers", "cpu,cuda"),
        ("ATELIER_PRECISION", "FP16", "precision", "fp16"),
        ("ATELIER_STYLIZE_SLOTS", "3", "stylize_slots", 3),
        ("ATELIER_MEMORY_BUDGET_GB", "2.5", "memory_budget_bytes", 2_500_000_000),
        ("ATELIER_UPLOAD_BUDGET_MB", "64", "upload_budget_bytes", 64 * 2**20),
        ("ATELIER_SHAPE_BUCKET", "32", "shape_bucket", 32),
        ("ATELIER_SAMPLE_BATCHING", "1", "sample_batching", True),
        ("ATELIER_QUEUE_SECONDS", "0", "queue_seconds", 0.0),
        ("ATELIER_METRICS_AUTH", "key", "metrics_need_key", True),
        ("ATELIER_RATE_LIMIT", "90", "rate_limit_per_minute", 90.0),
        (
            "ATELIER_API_KEYS",
            " k-0123456789abcdef, ,k-0123456789abcdef,k-fedcba9876543210",
            "api_keys",
            ("k-0123456789abcdef", "k-fedcba9876543210"),
        ),
    ],
)
def test_each_variable_is_read_into_its_field(name, value, field, expected):
    assert getattr(Settings.from_environment({name: value}), field) == expected


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("ATELIER_PROVIDERS", "gpu", "comma-separated list of cuda, cpu"),
        ("ATELIER_CUDA_OPTIONS", "cudnn_conv_algo_search=FAST", "takes EXHAUSTIVE, HEURISTIC or DEFAULT"),
        ("ATELIER_PRECISION", "fp8", "one of auto, fp32, fp16"),
        ("ATELIER_STYLIZE_SLOTS", "0", "a whole number >= 1"),
        ("ATELIER_MEMORY_BUDGET_GB", "-1", "a number > 0"),
        ("ATELIER_UPLOAD_BUDGET_MB", "lots", "a number > 0"),
        ("ATELIER_QUEUE_SECONDS", "nan", "a number >= 0"),
        ("ATELIER_SAMPLE_BATCHING", "yes", "one of 0, 1"),
        ("ATELIER_METRICS_AUTH", "closed", "one of open, key"),
        ("ATELIER_API_KEYS", "short", "at least 16 printable ASCII characters"),
        ("ATELIER_API_KEYS_FILE", "/nonexistent/keys", "cannot read it"),
    ],
)
def test_a_bad_value_is_refused_by_name(name, value, words):
    with pytest.raises(SettingsError) as refused:
        Settings.from_environment({name: value})
    assert str(refused.value).startswith(name) and words in str(refused.value)


def test_a_keys_file_adds_its_keys_and_skips_comments(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# rotated 2026-12\nk-fromthefile-000000\n\n  k-fromthefile-111111  \n")
    s = Settings.from_environment({"ATELIER_API_KEYS": "k-fromtheenvironment", "ATELIER_API_KEYS_FILE": str(keys)})
    assert s.api_keys == ("k-fromtheenvironment", "k-fromthefile-000000", "k-fromthefile-111111")
    keys.write_text("# nothing yet\n")
    with pytest.raises(SettingsError, match="holds no key"):
        Settings.from_environment({"ATELIER_API_KEYS_FILE": str(keys)})


def test_a_name_the_service_does_not_read_is_reported_and_the_clients_key_gets_a_hint():
    s = Settings.from_environment({"ATELIER_QUEUE_SECOND": "5", "ATELIER_API_KEY": "x", "ATELIER_URL": "http://x"})
    assert s.ignored == ("ATELIER_API_KEY", "ATELIER_QUEUE_SECOND")
    assert "ATELIER_API_KEYS" in s.describe_ignored()
    assert Settings.from_environment({"ATELIER_URL": "http://x"}).describe_ignored() is None


def test_the_readmes_configuration_table_names_every_variable():
    listed = set(re.findall(r"^\| `(ATELIER_[A-Z0-9_]+)` \|", (REPO / "README.md").read_text(), re.MULTILINE))
    assert listed == NAMES
