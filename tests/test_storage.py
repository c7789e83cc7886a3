"""Storage against a real S3 endpoint (moto's server on loopback): upload, presigned GET, failures."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from trellis_mv import storage
from trellis_mv.config import Settings
from trellis_mv.errors import UserError, WorkerError
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


def test_a_refused_upload_is_an_error_not_a_base64_answer(s3_settings):
    settings = dataclasses.replace(s3_settings, bucket_name="no-such-bucket")
    with pytest.raises(WorkerError, match=r"^upload to bucket 'no-such-bucket' failed: NoSuchBucket \("):
        store_glb(DATA, OutputInput(), job_id="j", settings=settings, store=S3Store.from_settings(settings))


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
