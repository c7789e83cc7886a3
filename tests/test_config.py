"""Settings from the environment: defaults, parsing, and start-up errors that name the variable."""

from __future__ import annotations

import dataclasses

import pytest

from trellis_mv.config import Settings, env_var_names
from trellis_mv.errors import StartupError, UserError
from trellis_mv.schema import parse_job_input

pytestmark = pytest.mark.timeout(10)

BUCKET = {"BUCKET_NAME": "glbs", "BUCKET_ACCESS_KEY_ID": "id", "BUCKET_SECRET_ACCESS_KEY": "secret"}


def test_defaults_from_an_empty_environment():
    settings = Settings.from_env({})
    assert settings == Settings()
    assert (settings.max_views, settings.max_image_bytes, settings.max_image_pixels) == (8, 20_000_000, 4096 * 4096)
    assert settings.max_base64_glb_bytes == 14_000_000
    assert settings.model_dir == "/models/TRELLIS.2-4B"
    assert (settings.low_vram, settings.max_batch, settings.generator) == ("auto", None, None)
    assert not settings.has_bucket


def test_values_are_parsed_by_type_and_empty_means_default():
    env = {
        "TRELLIS_MV_MAX_VIEWS": "4",
        "TRELLIS_MV_URL_TIMEOUT_S": "2.5",
        "TRELLIS_MV_MAX_BATCH": " 3 ",
        "TRELLIS_MV_LOW_VRAM": "on",
        "TRELLIS_MV_LOG_LEVEL": "debug",
        "TRELLIS_MV_MODEL_DIR": "",
        **BUCKET,
        "BUCKET_ENDPOINT_URL": "http://127.0.0.1:9000",
    }
    settings = Settings.from_env(env)
    assert (settings.max_views, settings.url_timeout_s, settings.max_batch) == (4, 2.5, 3)
    assert (settings.low_vram, settings.log_level, settings.model_dir) == ("on", "DEBUG", "/models/TRELLIS.2-4B")
    assert settings.has_bucket and settings.bucket_endpoint_url == "http://127.0.0.1:9000"


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().max_views = 3


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRELLIS_MV_MAX_VIEWS": "many"}, "TRELLIS_MV_MAX_VIEWS: expected an integer, got 'many'"),
        ({"TRELLIS_MV_MAX_VIEWS": "0"}, "TRELLIS_MV_MAX_VIEWS: 0 is too small; the least allowed is 1"),
        ({"TRELLIS_MV_URL_TIMEOUT_S": "soon"}, "TRELLIS_MV_URL_TIMEOUT_S: expected a number, got 'soon'"),
        ({"TRELLIS_MV_URL_TIMEOUT_S": "nan"}, "TRELLIS_MV_URL_TIMEOUT_S: nan is too small; the least allowed is 0.001"),
        ({"TRELLIS_MV_LOW_VRAM": "maybe"}, "TRELLIS_MV_LOW_VRAM: 'maybe' is not one of auto, on, off"),
        ({"TRELLIS_MV_LOG_LEVEL": "loud"}, "TRELLIS_MV_LOG_LEVEL: 'LOUD' is not one of DEBUG, INFO, WARNING, ERROR"),
        ({"TRELLIS_MV_URL_EXPIRES_S": "59"}, "TRELLIS_MV_URL_EXPIRES_S: 59 is too small; the least allowed is 60"),
        ({"TRELLIS_MV_URL_EXPIRES_S": "604801"}, "TRELLIS_MV_URL_EXPIRES_S: 604801 is too large; the most allowed is 604800"),
        (
            {"TRELLIS_MV_KEY_PREFIX": "glbs/"},
            "TRELLIS_MV_KEY_PREFIX: 'glbs/' is not allowed; use 1 to 200 letters, digits, '.', '_', '-' and '/' "
            "(not at either end, no empty or '..' parts)",
        ),
        ({"TRELLIS_MV_GENERATOR": "tests.cpu"}, "TRELLIS_MV_GENERATOR: 'tests.cpu' is not of the form 'module:callable'"),
        (
            {"BUCKET_NAME": "glbs"},
            "BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY: not set, but other BUCKET_* settings are; set "
            "BUCKET_NAME, BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY (and optionally BUCKET_ENDPOINT_URL, "
            "BUCKET_REGION) to upload GLBs, or none of them to answer base64",
        ),
        (
            {"BUCKET_ENDPOINT_URL": "https://r2.example"},
            "BUCKET_NAME, BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY: not set, but other BUCKET_* settings are; "
            "set BUCKET_NAME, BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY (and optionally BUCKET_ENDPOINT_URL, "
            "BUCKET_REGION) to upload GLBs, or none of them to answer base64",
        ),
    ],
)
def test_bad_environment_is_a_startup_error_naming_the_variable(env, message):
    with pytest.raises(StartupError) as raised:
        Settings.from_env(env)
    assert str(raised.value) == message


def test_every_field_has_its_own_variable():
    names = env_var_names()
    assert len(names) == len(set(names)) == len(dataclasses.fields(Settings))
    assert {"BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY", "BUCKET_NAME"} <= set(names)


def setting_allowed(env: dict) -> bool:
    try:
        Settings.from_env(env)
    except StartupError:
        return False
    return True


def request_allowed(output: dict) -> bool:
    """Whether ``output`` passes the schema (the request's other mistake, no images, is not about it)."""
    with pytest.raises(UserError) as raised:
        parse_job_input({"images": [], "output": output}, Settings(), has_bucket=True)
    return "output." not in str(raised.value)


@pytest.mark.parametrize("prefix", ["glbs", "a/b-c_d.e", "x" * 200, "/glbs", "glbs/", "a//b", "a/../b", "..", "tête", "x" * 201])
def test_the_key_prefix_setting_and_the_request_field_follow_one_rule(prefix):
    assert setting_allowed({"TRELLIS_MV_KEY_PREFIX": prefix}) == request_allowed({"key_prefix": prefix})


@pytest.mark.parametrize(("seconds", "allowed"), [(59, False), (60, True), (604800, True), (604801, False)])
def test_the_url_lifetime_setting_and_the_request_field_share_their_range(seconds, allowed):
    assert setting_allowed({"TRELLIS_MV_URL_EXPIRES_S": str(seconds)}) == request_allowed({"expires_in": seconds}) == allowed
