"""goosebit plugin of fwpack: offers signed `.fwi` images to devices.

goosebit's own software store parses SWUpdate and RAUC files only, so a
`.fwi` reaches a device through goosebit's plugin interface instead
(entry point group `goosebit.plugins`, `PluginSchema.update_source_hook`,
goosebit 0.2.12): the hook answers a device's poll with a DDI chunk whose
artifact is the image assigned to it, served by this plugin's router with
Range support (Starlette's FileResponse) so that a device resumes and
fetches only the chunks its delta plan needs.

Assignments are the file `assignments.json` in the directory named by
`FWPACK_GOOSEBIT_IMAGES`: `{"<device id>": {"file": "v2.fwi", "version":
"v2"}}`. A device whose reported `sw_version` (configData) equals the
version is up to date and gets nothing. Enable with
`GOOSEBIT_PLUGINS='["fwpack_goosebit"]'`.
"""

import hashlib
import json
import os
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse
from goosebit.device_manager import HandlingType
from goosebit.schema.plugins import PluginSchema
from goosebit.schema.updates import UpdateChunk, UpdateChunkArtifact


def _images() -> Path:
    return Path(os.environ.get("FWPACK_GOOSEBIT_IMAGES", "fwpack-images")).resolve()


def _assignment(dev_id: str) -> dict | None:
    try:
        a = json.loads((_images() / "assignments.json").read_text()).get(dev_id)
    except (OSError, ValueError):
        return None
    if not isinstance(a, dict) or not isinstance(a.get("file"), str):
        return None
    return a


def _image(name: str) -> Path:
    p = (_images() / name).resolve()
    # Only plain .fwi files of the directory itself.
    if p.parent != _images() or p.suffix != ".fwi" or not p.is_file():
        raise HTTPException(404)
    return p


_sha256_cache: dict[tuple[str, float], str] = {}


def _sha256(p: Path) -> str:
    key = (str(p), p.stat().st_mtime)
    if key not in _sha256_cache:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _sha256_cache[key] = h.hexdigest()
    return _sha256_cache[key]


router = APIRouter()


@router.get("/images/{name}")
async def image(name: str) -> FileResponse:
    return FileResponse(_image(name), media_type="application/octet-stream")


async def update_source(request: Request, device) -> tuple[HandlingType, UpdateChunk | None]:
    a = _assignment(device.id)
    if a is None or device.sw_version == a.get("version"):
        return HandlingType.SKIP, None
    try:
        p = _image(a["file"])
    except HTTPException:
        return HandlingType.SKIP, None
    url = str(request.base_url).rstrip("/") + config.url_prefix + "/images/" + p.name
    chunk = UpdateChunk(
        part="os",
        version=str(a.get("version", "")),
        name="fwpack",
        artifacts=[
            UpdateChunkArtifact(
                filename=p.name,
                hashes={"sha256": _sha256(p)},
                size=p.stat().st_size,
                links={"download-http": {"href": url}, "download": {"href": url}},
            )
        ],
    )
    return HandlingType.FORCED, chunk


config = PluginSchema(router=router, update_source_hook=update_source)
