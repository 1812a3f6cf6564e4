"""The manifest: what a SUIT manifest (RFC 9124) carries, as a pydantic model and as a CBOR map.

On the wire it is a CBOR map with text keys; UUIDs and digests are byte strings and times are whole
Unix seconds, so encoding is deterministic and a decoded manifest re-encodes to the same bytes
(the encryption's associated data depends on that).
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tinymlops.bundle import cbor
from tinymlops.bundle.reasons import BundleError, Reason

FORMAT_VERSION = 1
UINT63 = 2**63 - 1
MAX_UNIX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z: the largest time datetime can hold
HEX_SHA256 = r"^[0-9a-f]{64}$"


class _Model(BaseModel):
    # bytes appear as base64 in JSON views (logs, MLflow), never as raw or mangled text
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")


class SelfTest(_Model):
    """Golden vectors, carried signed: int8 inputs and the reference int8 outputs, row-major."""

    input_shape: Annotated[list[Annotated[int, Field(ge=1, le=UINT63)]], Field(min_length=1, max_length=8)]
    output_shape: Annotated[list[Annotated[int, Field(ge=1, le=UINT63)]], Field(min_length=1, max_length=8)]
    inputs: bytes
    expected: bytes
    count: int = Field(ge=0, le=UINT63)
    tolerance: int = Field(0, ge=0, le=255, description="max |Δ| allowed per int8 output element on device")

    @classmethod
    def from_arrays(cls, inputs: Any, expected: Any, tolerance: int = 0) -> SelfTest:
        """From int8 arrays shaped (count, *input_shape) and (count, *output_shape)."""
        import numpy as np

        x, y = np.ascontiguousarray(inputs, dtype=np.int8), np.ascontiguousarray(expected, dtype=np.int8)
        if x.ndim < 2 or y.ndim < 2 or len(x) != len(y):
            raise ValueError("selftest arrays must be (count, ...) with the same count")
        return cls(
            input_shape=list(x.shape[1:]),
            output_shape=list(y.shape[1:]),
            inputs=x.tobytes(),
            expected=y.tobytes(),
            count=len(x),
            tolerance=tolerance,
        )

    @model_validator(mode="after")
    def _sizes_match_shapes(self) -> SelfTest:
        if len(self.inputs) != self.count * math.prod(self.input_shape):
            raise ValueError("inputs length must be count × prod(input_shape)")
        if len(self.expected) != self.count * math.prod(self.output_shape):
            raise ValueError("expected length must be count × prod(output_shape)")
        return self


class ImageInfo(_Model):
    """The payload is a firmware model image (tinymlops.device.image), not a .tflite: what it is
    and what it needs, signed with the rest (its digest and size are the payload's)."""

    format: Literal["tmr"] = "tmr"
    format_version: int = Field(ge=1, le=UINT63, description="the image header's version")
    sha256: str = Field(pattern=HEX_SHA256)
    size: int = Field(ge=0, le=UINT63)
    arena_bytes: int = Field(ge=0, le=UINT63, description="RAM its memory plan needs")


class Lineage(_Model):
    """Where the model came from. Identifiers only: never the watermark key or any secret."""

    mlflow_run_id: str | None = None
    git_sha: str | None = None
    data_md5: str | None = None
    watermark_id: str | None = None
    instance_id: str | None = None  # the per-customer watermark instance this model is (public id)


class InputTransform(_Model):
    """What the device does to a raw sample before the model: per channel c,
    q = clamp(round((x[c] - offset[c]) / scale[c] / input_scale) + input_zero_point, -128, 127).

    Fitted on the train split of the data the model was trained on (tinymlops/ml/preprocess.py).
    The manifest's CBOR carries no floats, so the figures are float32 little-endian byte strings."""

    method: str = Field(min_length=1, max_length=32, description="minmax or standardize")
    layout: str = Field(min_length=1, max_length=32, description="image, time_series or vector")
    channels: int = Field(ge=1, le=65535)
    offset: bytes = Field(max_length=4 * 65535, description="float32 LE per channel")
    scale: bytes = Field(max_length=4 * 65535, description="float32 LE per channel")
    input_scale: bytes = Field(min_length=4, max_length=4, description="float32 LE: the int8 input's scale")
    input_zero_point: int = Field(ge=-128, le=127)

    @model_validator(mode="after")
    def _per_channel(self) -> InputTransform:
        if len(self.offset) != 4 * self.channels or len(self.scale) != 4 * self.channels:
            raise ValueError("offset and scale must hold 4 bytes (float32) per channel")
        return self

    @classmethod
    def from_floats(
        cls,
        method: str,
        layout: str,
        offset: list[float],
        scale: list[float],
        input_scale: float,
        input_zero_point: int,
    ) -> InputTransform:
        import numpy as np

        return cls(
            method=method,
            layout=layout,
            channels=len(offset),
            offset=np.asarray(offset, "<f4").tobytes(),
            scale=np.asarray(scale, "<f4").tobytes(),
            input_scale=np.asarray([input_scale], "<f4").tobytes(),
            input_zero_point=int(input_zero_point),
        )

    def floats(self) -> dict[str, Any]:
        import numpy as np

        return {
            "offset": np.frombuffer(self.offset, "<f4").tolist(),
            "scale": np.frombuffer(self.scale, "<f4").tolist(),
            "input_scale": float(np.frombuffer(self.input_scale, "<f4")[0]),
        }


class Encryption(_Model):
    """How the payload is encrypted: AES-256-GCM under a content key wrapped (RFC 3394) by a KEK."""

    alg: Literal["A256GCM"] = "A256GCM"
    key_wrap: Literal["A256KW"] = "A256KW"
    kek_id: str = Field(pattern=r"^[0-9a-f]{16}$", description="which KEK wraps the content key")
    wrapped_key: bytes = Field(min_length=40, max_length=40)
    nonce: bytes = Field(min_length=12, max_length=12)


class Manifest(_Model):
    format_version: int = FORMAT_VERSION
    model_name: str = Field(min_length=1, max_length=256)
    model_version: str = Field(min_length=1, max_length=256)
    sequence: int = Field(ge=0, le=UINT63, description="monotonic; devices refuse lower ones (anti-rollback)")
    vendor_id: uuid.UUID
    class_id: uuid.UUID
    payload_sha256: str = Field(pattern=HEX_SHA256, description="of the plaintext model")
    payload_size: int = Field(ge=0, le=UINT63)
    encrypted: bool = False
    ciphertext_sha256: str | None = Field(None, pattern=HEX_SHA256)
    ciphertext_size: int | None = Field(None, ge=0, le=UINT63)
    encryption: Encryption | None = None
    created: datetime
    expires: datetime
    arena_bytes: int = Field(ge=0, le=UINT63)
    ops: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(max_length=1024)
    lineage: Lineage = Lineage()
    selftest: SelfTest | None = None
    preprocessing: InputTransform | None = None  # absent on the wire when None
    image: ImageInfo | None = None  # absent on the wire when None (the payload is a .tflite)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.image is not None and (
            self.image.sha256 != self.payload_sha256
            or self.image.size != self.payload_size
            or self.image.arena_bytes != self.arena_bytes
        ):
            raise ValueError("image digest, size and arena must be the payload's and the manifest's")
        if self.created.tzinfo is None or self.expires.tzinfo is None:
            raise ValueError("created and expires must be timezone-aware")
        if self.expires <= self.created:
            raise ValueError("expires must be after created")
        if self.encrypted != (self.encryption is not None):
            raise ValueError("encrypted and encryption must agree")
        if not self.encrypted and (self.ciphertext_sha256 is not None or self.ciphertext_size is not None):
            raise ValueError("a plaintext bundle has no ciphertext digest or size")
        return self

    @property
    def stored_size(self) -> int:
        """Bytes after the manifest in the container (ciphertext incl. GCM tag, or plaintext)."""
        return self.ciphertext_size if self.encrypted and self.ciphertext_size is not None else self.payload_size

    def json_view(self) -> dict[str, Any]:
        """JSON-ready dict for logs and MLflow: UUIDs and times as strings, bytes as base64."""
        return self.model_dump(mode="json")


class ManifestDraft(_Model):
    """What the caller decides; build_bundle adds digests, sizes, times and encryption."""

    # the same limits as Manifest's, so a draft that validates makes a manifest that does
    model_name: str = Field(min_length=1, max_length=256)
    model_version: str = Field(min_length=1, max_length=256)
    sequence: int = Field(ge=0, le=UINT63)
    vendor: str = Field(min_length=1)
    device_class: str = Field(min_length=1)
    arena_bytes: int = Field(ge=0, le=UINT63)
    ops: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(max_length=1024)
    lineage: Lineage = Lineage()
    selftest: SelfTest | None = None
    preprocessing: InputTransform | None = None
    image: ImageInfo | None = None
    lifetime: timedelta = Field(timedelta(days=365), gt=timedelta(0), description="manifest expires this long after")


def vendor_uuid(vendor: str) -> uuid.UUID:
    """RFC 9124 §8.4.8.2: vendor-id = UUIDv5(DNS namespace, vendor domain name)."""
    return uuid.uuid5(uuid.NAMESPACE_DNS, vendor)


def class_uuid(vendor: str, device_class: str) -> uuid.UUID:
    """RFC 9124 §8.4.8.2: class-id = UUIDv5(vendor-id, class name)."""
    return uuid.uuid5(vendor_uuid(vendor), device_class)


def utc_seconds(when: datetime) -> datetime:
    """Whole seconds in UTC: what the wire format can carry."""
    if when.tzinfo is None:
        raise BundleError(Reason.MALFORMED, "time must be timezone-aware")
    return when.astimezone(timezone.utc).replace(microsecond=0)


# -- wire format ---------------------------------------------------------------------------------
_FIELDS = tuple(Manifest.model_fields)
_OMITTED_WHEN_NONE = ("preprocessing", "image")  # added after format 1 shipped: absent means None


def to_wire(m: Manifest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(m, name)
        if value is None and name in _OMITTED_WHEN_NONE:
            continue
        if isinstance(value, uuid.UUID):
            value = value.bytes
        elif name in ("payload_sha256", "ciphertext_sha256") and value is not None:
            value = bytes.fromhex(value)
        elif isinstance(value, datetime):
            value = int(value.timestamp())
        elif isinstance(value, Lineage):
            # instance_id came after format 1 shipped: absent on the wire when None, like the fields above
            value = value.model_dump(exclude={"instance_id"} if value.instance_id is None else set())
        elif isinstance(value, BaseModel):
            value = value.model_dump()
        out[name] = value
    return out


def encode(m: Manifest) -> bytes:
    return cbor.dumps(to_wire(m))


def _bytes(value: Any, size: int, name: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise BundleError(Reason.MALFORMED, f"manifest.{name}: expected {size} bytes")
    return value


def _time(value: Any, name: str) -> datetime:
    if type(value) is not int or not 0 <= value <= MAX_UNIX_SECONDS:
        raise BundleError(Reason.MALFORMED, f"manifest.{name}: expected whole Unix seconds")
    return datetime.fromtimestamp(value, timezone.utc)


def from_wire(obj: Any) -> Manifest:
    """Strictly rebuild a Manifest from a decoded CBOR map; anything off is MALFORMED naming the field."""
    if not isinstance(obj, dict):
        raise BundleError(Reason.MALFORMED, "manifest: expected a CBOR map")
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        if type(version) is int:
            raise BundleError(
                Reason.UNSUPPORTED_VERSION, f"manifest.format_version {version}, expected {FORMAT_VERSION}"
            )
        raise BundleError(Reason.MALFORMED, "manifest.format_version: missing or not an integer")
    unknown = sorted(str(k) for k in obj if k not in _FIELDS)
    missing = [k for k in _FIELDS if k not in obj and k not in _OMITTED_WHEN_NONE]
    if unknown or missing:
        raise BundleError(Reason.MALFORMED, f"manifest: unknown keys {unknown}, missing keys {missing}")
    data = dict(obj)
    data["vendor_id"] = uuid.UUID(bytes=_bytes(obj["vendor_id"], 16, "vendor_id"))
    data["class_id"] = uuid.UUID(bytes=_bytes(obj["class_id"], 16, "class_id"))
    data["payload_sha256"] = _bytes(obj["payload_sha256"], 32, "payload_sha256").hex()
    if obj["ciphertext_sha256"] is not None:
        data["ciphertext_sha256"] = _bytes(obj["ciphertext_sha256"], 32, "ciphertext_sha256").hex()
    data["created"] = _time(obj["created"], "created")
    data["expires"] = _time(obj["expires"], "expires")
    try:
        # strict: a CBOR text "5" is not the integer 5, a 0/1 is not a boolean
        return Manifest.model_validate(data, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise BundleError(Reason.MALFORMED, f"manifest.{where}: {first['msg']}") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise BundleError(Reason.MALFORMED, f"manifest: {type(exc).__name__}") from None


def decode(data: bytes) -> Manifest:
    """Strict: the bytes must be the manifest's one encoding (every field present, even those with
    a default), so a device can hash what it received and a signer can never be tricked into two
    encodings of one manifest (the GCM associated data is computed from the re-encoding)."""
    m = from_wire(cbor.loads(data, "manifest"))
    if encode(m) != bytes(data):
        raise BundleError(Reason.MALFORMED, "manifest: not in its canonical encoding (a field left to its default?)")
    return m
