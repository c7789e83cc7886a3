"""Storage against a real S3 endpoint (moto's server on loopback): upload, presigned GET, failures."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
import threading
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from processes import environment, free_port

from trellis_mv import storage
from trellis_mv.config import Settings
from trellis_mv.errors import StartupError, StorageError, UserError
from trellis_mv.schema import OutputInput
from trellis_mv.storage import S3Store, glb_key, store_glb

pytestmark = pytest.mark.timeout(30)

DATA = b"glTF" + bytes(range(256)) * 40


def test_round_trip_through_a_presigned_url(s3_settings):
    store = S3Store.from_settings(s3_settings)
    stored = store_glb(DATA, OutputInput(expires_in=600), job_id="job-1", settings=s3_settings, store=store)

    assert re.fullmatch(r"trellis-mv/job-1/[0-9a-f]{32}\.glb", stored["key"])
    assert stored["bytes"] == len(DATA)
    assert stored["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert parse_qs(urlsplit(stored["url"]).query)["X-Amz-Expires"] == ["600"]
    response = requests.get(stored["url"], timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "model/gltf-binary"
    assert hashlib.sha256(response.content).hexdigest() == stored["sha256"]


def test_defaults_come_from_the_settings(s3_settings):
    settings = dataclasses.replace(s3_settings, key_prefix="glbs/prod", url_expires_s=120)
    stored = store_glb(DATA, OutputInput(), job_id="j", settings=settings, store=S3Store.from_settings(settings))
    assert stored["key"].startswith("glbs/prod/j/")
    assert parse_qs(urlsplit(stored["url"]).query)["X-Amz-Expires"] == ["120"]


def test_the_request_prefix_wins(s3_settings):
    output = OutputInput(key_prefix="customer-7/chairs")
    stored = store_glb(DATA, output, job_id="j", settings=s3_settings, store=S3Store.from_settings(s3_settings))
    assert stored["key"].startswith("customer-7/chairs/j/")


def test_every_key_is_new_and_job_ids_cannot_escape_their_folder():
    first, second = glb_key("p", "sync-1"), glb_key("p", "sync-1")
    assert first != second
    assert glb_key("p", "../../etc/passwd").startswith("p/.._.._etc_passwd/")
    assert glb_key("p", "").startswith("p/job/")


def test_uploads_send_no_checksums_that_r2_and_minio_refuse(s3_settings):
    """boto3 >= 1.36 adds CRC32 checksum headers by default; the store asks for them only when required."""
    store = S3Store.from_settings(s3_settings)
    sent: list[dict[str, str]] = []
    store.client.meta.events.register("before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers)))
    store.put("k.glb", DATA, content_type=storage.GLB_CONTENT_TYPE)
    assert len(sent) == 1
    assert [name for name in sent[0] if name.lower().startswith(("x-amz-checksum", "x-amz-sdk-checksum"))] == []


def test_a_refused_upload_is_a_storage_error_not_a_base64_answer(s3_settings):
    settings = dataclasses.replace(s3_settings, bucket_name="no-such-bucket")
    with pytest.raises(StorageError, match=r"^storage error: upload to bucket 'no-such-bucket' failed: NoSuchBucket \("):
        store_glb(DATA, OutputInput(), job_id="j", settings=settings, store=S3Store.from_settings(settings))


def test_the_start_up_check_passes_for_a_bucket_that_exists(s3_settings):
    S3Store.from_settings(s3_settings).check()


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        ({"bucket_name": "no-such-bucket"}, "does not exist: create it first, or set BUCKET_NAME to a bucket that exists"),
        ({"bucket_endpoint_url": "http://127.0.0.1:9"}, "cannot be reached: Could not connect to the endpoint URL"),
    ],
)
def test_the_start_up_check_names_the_bucket_and_the_cause_in_one_line(s3_settings, change, cause):
    settings = dataclasses.replace(s3_settings, **change)
    store = S3Store.from_settings(settings)
    with pytest.raises(StartupError) as caught:
        store.check()
    message = str(caught.value)
    assert message.startswith(f"bucket '{settings.bucket_name}' at {settings.bucket_endpoint_url} {cause}")
    assert "\n" not in message and caught.value.__cause__ is None


def test_base64_when_no_bucket_is_configured():
    stored = store_glb(DATA, OutputInput(), job_id="j", settings=Settings(), store=None)
    assert stored == {
        "bytes": len(DATA),
        "sha256": hashlib.sha256(DATA).hexdigest(),
        "base64": storage.base64.b64encode(DATA).decode("ascii"),
    }


def test_base64_when_asked_even_with_a_bucket(s3_settings):
    stored = store_glb(DATA, OutputInput(type="base64"), job_id="j", settings=s3_settings, store=S3Store.from_settings(s3_settings))
    assert "url" not in stored and "key" not in stored and stored["bytes"] == len(DATA)


def test_a_glb_too_large_for_base64_says_what_to_configure():
    settings = dataclasses.replace(Settings(), max_base64_glb_bytes=5_000)
    with pytest.raises(UserError) as caught:
        store_glb(DATA, OutputInput(), job_id="j", settings=settings, store=None)
    assert str(caught.value) == (
        f"output.type: the GLB is {len(DATA):,} bytes, over the 5,000 bytes that a base64 answer may carry (RunPod caps answers "
        "at 20 MB); set BUCKET_* on the endpoint to get a URL, or lower glb.texture_size/glb.decimation_target"
    )


def test_no_store_without_bucket_settings():
    assert S3Store.from_settings(Settings()) is None


@pytest.fixture(scope="module")
def checking_s3(tmp_path_factory) -> Iterator[tuple[str, str, str]]:
    """A moto S3 server that checks credentials, as AWS, R2 and MinIO do (the session's accepts any):
    its first four requests make a user, its key, its policy and a bucket; every later one is
    authenticated. Yields the endpoint, the key id and its secret."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env={**environment(), "INITIAL_NO_AUTH_ACTION_COUNT": "4"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    drain = threading.Thread(target=server.stderr.read, daemon=True)  # its request log, once it listens
    try:
        for line in server.stderr:  # werkzeug says where it listens once it does
            if "Running on" in line:
                break
        drain.start()
        endpoint = f"http://127.0.0.1:{port}"
        session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
        iam = session.client("iam", endpoint_url=endpoint)
        iam.create_user(UserName="worker")
        key = iam.create_access_key(UserName="worker")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="worker", PolicyName="s3", PolicyDocument=json.dumps(policy))
        session.client("s3", endpoint_url=endpoint).create_bucket(Bucket="glbs")
        yield endpoint, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        server.terminate()
        server.wait(10)
        if drain.ident is not None:  # started
            drain.join(10)
        server.stderr.close()


@pytest.mark.parametrize(("key_id", "secret", "cause"), [
    (None, None, None),
    (None, "wrong", "refused the credentials (403 Forbidden): check BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY"),
    ("AKIAUNKNOWN0000000", None, "refused the credentials (403 Forbidden)"),
])
def test_the_start_up_check_refuses_wrong_credentials(checking_s3, key_id, secret, cause):
    endpoint, right_key_id, right_secret = checking_s3
    settings = dataclasses.replace(Settings(), bucket_endpoint_url=endpoint, bucket_name="glbs",
                                   bucket_access_key_id=key_id or right_key_id, bucket_secret_access_key=secret or right_secret)
    store = S3Store.from_settings(settings)
    if cause is None:
        store.check()
        return
    with pytest.raises(StartupError) as caught:
        store.check()
    assert str(caught.value).startswith(f"bucket 'glbs' at {endpoint} {cause}")
