"""`tinymlops export`: a model as a C array, for firmware that compiles it in.

The header carries the bytes with their alignment, their size and their sha256, so the firmware
can check at build time (size) and at boot (digest) that it holds what was exported. The model
image the firmware runtime executes (tinymlops.device.image) goes in a second header, with the
arena its memory plan needs.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import typer

from tinymlops.cli.common import out
from tinymlops.errors import ModelError

ALIGNMENT = 16  # TFLite Micro reads the flatbuffer in place; 16 bytes suits every core we target


def c_identifier(text: str) -> str:
    name = re.sub(r"[^0-9A-Za-z_]", "_", text)
    return name if name and not name[0].isdigit() else f"m_{name}"


def c_array(
    data: bytes, symbol: str, source: str, what: str, alignment: int = ALIGNMENT, extra: dict[str, int] | None = None
) -> str:
    """A self-contained C11/C++11 header: `symbol` (aligned bytes), SYMBOL_SIZE and SYMBOL_SHA256."""
    digest = hashlib.sha256(data).hexdigest()
    upper, guard = symbol.upper(), f"{symbol.upper()}_H_"
    rows = [
        "  " + ", ".join(f"0x{b:02x}" for b in data[i : i + 12]) + ("," if i + 12 < len(data) else "")
        for i in range(0, len(data), 12)
    ]
    return "\n".join(
        [
            f"/* {what}, exported by `tinymlops export` from {source}. Do not edit.",
            f" * {len(data)} bytes, sha256 {digest}, aligned to {alignment} bytes. */",
            f"#ifndef {guard}",
            f"#define {guard}",
            "",
            "#include <stdint.h>",
            "",
            f"#define {upper}_SIZE {len(data)}u",
            f'#define {upper}_SHA256 "{digest}"',
            f"#define {upper}_ALIGNMENT {alignment}u",
            *(f"#define {upper}_{key} {value}u" for key, value in (extra or {}).items()),
            "",
            "#if defined(__cplusplus)",
            f"alignas({alignment}) static const uint8_t {symbol}[{upper}_SIZE] = {{",
            "#else",
            f"_Alignas({alignment}) static const uint8_t {symbol}[{upper}_SIZE] = {{",
            "#endif",
            *rows,
            "};",
            "",
            f"#endif /* {guard} */",
            "",
        ]
    )


def model_image(model: bytes) -> tuple[bytes, int]:
    """The firmware runtime's model image of `model` (tinymlops.device.image) → (bytes, arena bytes)."""
    from tinymlops.device.image import compile_model

    compiled = compile_model(model)
    return compiled.data, compiled.image.arena_bytes


def export(
    model: Path = typer.Argument(..., help="int8 .tflite file"),
    c_array_flag: bool = typer.Option(False, "--c-array", help="write C headers (the only format for now)"),
    output: Path = typer.Option(Path("."), "--out", help="directory for the headers"),
    name: str | None = typer.Option(None, "--name", help="C symbol", show_default="g_<file stem>"),
    image: bool = typer.Option(True, "--image/--no-image", help="also the firmware's model image"),
) -> None:
    """Export a model for firmware: a C header with the .tflite bytes (aligned, with size and
    sha256), and one with the model image the firmware runtime executes (with its arena size)."""
    from tinymlops.util.io import write_bytes

    if not c_array_flag:
        raise typer.BadParameter("choose a format: --c-array")
    if not model.is_file():
        raise ModelError(f"{model}: file not found")
    data = model.read_bytes()
    if data[4:8] != b"TFL3":
        raise ModelError(f"{model}: not a .tflite flatbuffer (no TFL3 identifier)")
    symbol = c_identifier(name or f"g_{model.stem}")
    headers = {f"{symbol}.h": c_array(data, symbol, model.name, "TFLite flatbuffer")}
    if image:  # compiled before anything is written: a model the runtime cannot run leaves nothing
        compiled, arena = model_image(data)
        img = f"{symbol}_image"
        what = "Model image for the firmware runtime"
        headers[f"{img}.h"] = c_array(compiled, img, model.name, what, extra={"ARENA_BYTES": arena})
    for file, text in headers.items():
        out.print(f"wrote {write_bytes(output / file, text.encode())}", soft_wrap=True, highlight=False)
