"""goosebit plugin of fwpack: lets goosebit's software store take signed `.fwi` images.

goosebit (0.2.12) reads the version and hardware compatibility of an
uploaded file (`PUT /api/v1/software`, the UI's upload form, or a URL)
with `goosebit.updates.swdesc.parse_file`, which knows SWUpdate and RAUC
files only. This plugin wraps that function: a file starting with the
`.fwi` magic is described from its header (docs/FORMAT.md): version =
the version label, or the payload version when the label is empty (what
`fwpack-updater fleet` reports as `sw_version`), compatibility = the
board with revision `default` (what the device reports as
`hw_boardname`). Everything else is goosebit's own: software list,
rollouts, device assignment, the DDI deployment and the download, which
goosebit serves with Range support (Starlette's FileResponse), so a
device resumes and fetches only the chunks its delta plan needs.

Nothing here is trusted: the device checks the image's signature, board
and version itself. The header is only read for the metadata goosebit
shows and matches devices by.

Enable with `GOOSEBIT_PLUGINS='["fwpack_goosebit"]'`.
"""

import hashlib
import struct

from anyio import Path, open_file
from goosebit.db.models import SoftwareImageFormat
from goosebit.schema.plugins import PluginSchema
from goosebit.updates import swdesc
from goosebit.util.version import Version

MAGIC = b"FWPKIMG\0"
HEADER_LEN = 256


def _string(raw: bytes) -> str:
    text, _, pad = raw.partition(b"\0")
    if pad.strip(b"\0"):
        raise ValueError("a header string has bytes after its NUL")
    return text.decode("utf-8")


def describe(header: bytes, file_len: int) -> dict:
    """goosebit's description of an image from its 256-byte header."""
    if len(header) < HEADER_LEN or header[:8] != MAGIC:
        raise ValueError("not a .fwi image")
    (fmt, header_len) = struct.unpack_from("<HH", header, 8)
    if fmt != 2 or header_len != HEADER_LEN:
        raise ValueError(f"unsupported .fwi format version {fmt}")
    (payload_version,) = struct.unpack_from("<Q", header, 24)
    (image_len,) = struct.unpack_from("<Q", header, 96)
    if image_len != file_len:
        raise ValueError(f"image_len {image_len} but the file has {file_len} bytes")
    board = _string(header[104:168])
    if not board:
        raise ValueError("empty board")
    version = _string(header[168:232]) or str(payload_version)
    # goosebit orders software by the SWUpdate version scheme and refuses
    # what it cannot parse.
    Version.parse(version)
    return {
        "version": version,
        "compatibility": [{"hw_model": board, "hw_revision": "default"}],
    }


async def _parse_fwi(file: Path) -> dict:
    sha1 = hashlib.sha1()
    async with await open_file(file, "rb") as f:
        header = await f.read(HEADER_LEN)
        sha1.update(header)
        while block := await f.read(1 << 20):
            sha1.update(block)
    attrs = describe(header, (await file.stat()).st_size)
    attrs["size"] = (await file.stat()).st_size
    # goosebit names the store directory after it and offers it to the
    # device as the artifact's `sha1`.
    attrs["hash"] = sha1.hexdigest()
    # goosebit's enum has SWU and RAUC only; the format is used for
    # nothing but this column.
    attrs["image_format"] = SoftwareImageFormat.SWU
    return attrs


_goosebit_parse_file = swdesc.parse_file


async def parse_file(file: Path) -> dict:
    async with await open_file(file, "rb") as f:
        magic = await f.read(len(MAGIC))
    if magic == MAGIC:
        return await _parse_fwi(Path(file))
    return await _goosebit_parse_file(file)


# create_software_update and parse_remote look the function up in the
# module at each call, so uploads and URLs both reach this one.
swdesc.parse_file = parse_file

config = PluginSchema()
