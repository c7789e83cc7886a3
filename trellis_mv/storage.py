"""Where a finished GLB and its preview go: an S3-compatible bucket (answered as presigned URLs) or inline base64.

Any S3-compatible store works (AWS, Cloudflare R2, MinIO, ...). boto3 is configured for them:
checksums only when the operation requires them (boto3 1.36 started sending CRC checksums by default,
which R2 and MinIO reject), path-style addressing for custom endpoints, and botocore's "standard"
retries for transient errors.

The bucket is checked when the worker starts (``S3Store.check``: ``head_bucket`` with the configured
credentials), so a missing bucket or refused credentials stop the worker at start, before any GPU
work, with one line naming the bucket and the cause. An upload that fails later (the bucket deleted,
the credentials revoked, the store down) raises ``StorageError``: the job's answer names the bucket and
the cause, as a configuration problem, never a quiet switch to base64.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .config import Settings
from .errors import StartupError, StorageError, UserError
from .schema import OutputInput

__all__ = ["GLB_CONTENT_TYPE", "PREVIEW_CONTENT_TYPE", "S3Store", "glb_key", "store_glb", "store_preview"]

GLB_CONTENT_TYPE = "model/gltf-binary"
PREVIEW_CONTENT_TYPE = "image/png"
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MISSING = "does not exist: create it first, or set BUCKET_NAME to a bucket that exists"
# What head_bucket's status codes mean for this worker (a HEAD answer has no body: the code is all there is).
_REFUSALS = {
    "404": _MISSING,
    "NoSuchBucket": _MISSING,
    "403": "refused the credentials (403 Forbidden): check BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY, "
           "and that they may read and write this bucket",
    "301": "is in another region (301 Moved Permanently): set BUCKET_REGION to the bucket's region",
    "400": "answered 400 Bad Request: check BUCKET_REGION (auto for R2) and BUCKET_ENDPOINT_URL",
}


class S3Store:
    """One bucket: upload objects and hand out presigned GET URLs."""

    def __init__(self, client: Any, bucket: str):
        self.client = client
        self.bucket = bucket

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store | None:
        """The bucket named by the ``BUCKET_*`` settings, or None when none is configured."""
        if not settings.has_bucket:
            return None
        config = Config(
            retries={"mode": "standard", "max_attempts": 5},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            signature_version="s3v4",
            s3={"addressing_style": "path" if settings.bucket_endpoint_url else "auto"},
            connect_timeout=10,
            read_timeout=60,
        )
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.bucket_endpoint_url,
            aws_access_key_id=settings.bucket_access_key_id,
            aws_secret_access_key=settings.bucket_secret_access_key,
            region_name=settings.bucket_region or "us-east-1",
            config=config,
        )
        return cls(client, settings.bucket_name)

    def check(self) -> None:
        """``head_bucket`` with the configured credentials; ``StartupError`` naming the bucket and the cause."""
        where = f"bucket {self.bucket!r} at {self.client.meta.endpoint_url}"
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", "error"))
            cause = _REFUSALS.get(code, f"refused head_bucket: {_described_error(error)}")
            raise StartupError(f"{where} {cause}") from None  # one line: the cause is in it
        except BotoCoreError as error:
            raise StartupError(f"{where} cannot be reached: {error}; check BUCKET_ENDPOINT_URL") from None

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Upload ``data`` under ``key``; raises ``StorageError`` when the store refuses or cannot be reached."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except (ClientError, BotoCoreError) as error:
            raise StorageError(
                f"storage error: upload to bucket {self.bucket!r} failed: {_described_error(error)}; "
                "the worker's storage settings (BUCKET_*) or the bucket need fixing, not the request"
            ) from error

    def presigned_url(self, key: str, *, expires_in: int) -> str:
        """A GET URL for ``key`` that works without credentials for ``expires_in`` seconds."""
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in
        )


def glb_key(prefix: str, job_id: str) -> str:
    """``<prefix>/<job id>/<uuid>.glb``: one folder per job, never overwriting an earlier answer."""
    safe_job_id = _UNSAFE_KEY_CHARS.sub("_", job_id)[:128] or "job"
    return f"{prefix}/{safe_job_id}/{uuid.uuid4().hex}.glb"


def store_glb(
    data: bytes, output: OutputInput, *, job_id: str, settings: Settings, store: S3Store | None
) -> dict[str, Any]:
    """Put the GLB where the request asked and describe it: url or base64, key, bytes, sha256."""
    described = _described(data)
    kind = output.type or ("s3" if store is not None else "base64")
    if kind == "base64":
        cap = settings.max_base64_glb_bytes
        if len(data) > cap:
            raise UserError(
                "output.type",
                f"the GLB is {len(data):,} bytes, over the {cap:,} bytes that a base64 answer may "
                "carry (RunPod caps answers at 20 MB); set BUCKET_* on the endpoint to get a URL, or lower "
                "glb.texture_size/glb.decimation_target",
            )
        return {**described, "base64": base64.b64encode(data).decode("ascii")}
    assert store is not None, "schema.parse_job_input refuses output.type s3 without a bucket"
    key = glb_key(output.key_prefix or settings.key_prefix, job_id)
    return {**described, **_upload(store, key, data, GLB_CONTENT_TYPE, output, settings)}


def store_preview(
    data: bytes, output: OutputInput, *, glb: dict[str, Any], settings: Settings, store: S3Store | None
) -> dict[str, Any]:
    """Put the preview PNG beside the stored ``glb`` (``<key>.preview.png``, or base64 like it); describe it.

    A base64 answer carries both: together they must fit under the GLB's base64 cap.
    """
    described = _described(data)
    if "base64" in glb:
        cap = settings.max_base64_glb_bytes
        if glb["bytes"] + len(data) > cap:
            raise UserError(
                "output.preview",
                f"the GLB and its preview are {glb['bytes'] + len(data):,} bytes, over the {cap:,} bytes that a "
                "base64 answer may carry; leave output.preview out, or set BUCKET_* on the endpoint to get URLs",
            )
        return {**described, "base64": base64.b64encode(data).decode("ascii")}
    assert store is not None, "a GLB with a key was uploaded to this store"
    key = glb["key"].removesuffix(".glb") + ".preview.png"
    return {**described, **_upload(store, key, data, PREVIEW_CONTENT_TYPE, output, settings)}


def _described_error(error: ClientError | BotoCoreError) -> str:
    if isinstance(error, BotoCoreError):
        return str(error)
    details = error.response.get("Error", {})
    return f"{details.get('Code', 'error')} ({details.get('Message') or 'no message'})"


def _described(data: bytes) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _upload(store: S3Store, key: str, data: bytes, content_type: str, output: OutputInput, settings: Settings) -> dict[str, str]:
    store.put(key, data, content_type=content_type)
    return {"key": key, "url": store.presigned_url(key, expires_in=output.expires_in or settings.url_expires_s)}
