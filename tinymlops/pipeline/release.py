"""Release signing: one model as one signed (optionally encrypted) bundle per device class, with
the same golden-vector self-test in each manifest. Each class's bundle carries what its firmware
runs: the model image compiled for it (tinymlops.device.image), or the .tflite for a class whose
firmware is TFLM (no emulated core). The pipeline's release task and the fleet simulator both sign
through here."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from tinymlops.bundle import InputTransform, Lineage, Signer, build_bundle
from tinymlops.device.profiles import DeviceProfile
from tinymlops.util.io import write_bytes, write_json


def sign_release(
    model: bytes,
    profiles: Iterable[DeviceProfile],
    signer: Signer,
    out_dir: Path,
    *,
    model_name: str,
    model_version: str,
    sequence: int,
    selftest: object,
    lineage: Lineage | None = None,
    preprocessing: InputTransform | None = None,
    kek_for: Callable[[str], bytes | None] | None = None,
    write_manifests: bool = False,
) -> dict[str, Path]:
    """`model` signed for each profile's device class → {class: <out_dir>/<class>.bundle}; with
    `kek_for`, each class's payload encrypted under its key; with `write_manifests`, each
    manifest's JSON view beside its bundle (<class>.manifest.json). A class whose firmware cannot
    run the model (an op or shape its runtime refuses) gets no bundle but <class>.excluded.txt with
    the one-line reason, which the HIL reports. Beside each bundle of a model image lies the
    .tflite it was compiled from (<class>.tflite, the HIL oracle's; it is not shipped)."""
    from tinymlops.device import hil
    from tinymlops.errors import UnsupportedModel

    out: dict[str, Path] = {}
    for profile in profiles:
        device_class = profile.device_class
        try:
            payload = hil.class_payload(model, profile)
        except UnsupportedModel as exc:  # refused before bundling, with one line naming op and tensor
            write_bytes(Path(out_dir) / f"{device_class}{hil.EXCLUDED_SUFFIX}", f"not bundled: {exc}\n".encode())
            continue
        draft = hil.manifest_draft(
            model,
            profile,
            model_name=model_name,
            model_version=model_version,
            sequence=sequence,
            selftest=selftest,
            lineage=lineage or Lineage(),
            payload=payload,
        )
        if preprocessing is not None:  # the device's input step, fitted on the data's train split
            draft = draft.model_copy(update={"preprocessing": preprocessing})
        path = Path(out_dir) / f"{device_class}.bundle"
        kek = kek_for(device_class) if kek_for else None
        manifest = build_bundle(payload.data, draft, signer, path, kek=kek)
        if payload.kind == "image":
            write_bytes(hil.reference_for(path), model)
        if write_manifests:
            write_json(Path(out_dir) / f"{device_class}.manifest.json", manifest.json_view())
        out[device_class] = path
    return out
