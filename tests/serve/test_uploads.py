"""Upload limits and checks on their own: where a stream is cut off, magic bytes, file mode."""

import asyncio
import io
import stat

import pytest
from starlette.datastructures import Headers, UploadFile

from rsretrieve.serve.uploads import (FORM_OVERHEAD, TIFF_MAGIC, UploadError, check_content_length,
                                      limited_receive, save_upload)

CHUNK = 64 << 10


def test_stream_is_cut_off_at_the_first_chunk_past_the_limit():
    calls = []

    async def receive():
        calls.append(1)
        return {"type": "http.request", "body": bytes(CHUNK), "more_body": True}

    async def drain(limit):
        wrapped = limited_receive(receive, limit)
        while True:
            await wrapped()

    with pytest.raises(UploadError) as e:
        asyncio.run(drain(0))
    assert e.value.status == 413
    # FORM_OVERHEAD is 2 MiB + 64 KiB = 33 chunks of 64 KiB: the 34th chunk crosses it and nothing more is read
    assert FORM_OVERHEAD == 33 * CHUNK and len(calls) == 34


def test_content_length_is_checked_before_reading():
    check_content_length(Headers({"content-length": str(1000 + FORM_OVERHEAD)}), 1000)
    with pytest.raises(UploadError, match="request body of 2.2 MB exceeds the upload limit") as e:
        check_content_length(Headers({"content-length": str(2_200_000)}), 1000)
    assert e.value.status == 413
    with pytest.raises(UploadError, match="invalid Content-Length") as e:
        check_content_length(Headers({"content-length": "lots"}), 1000)
    assert e.value.status == 400


@pytest.mark.parametrize("magic", TIFF_MAGIC)
def test_save_upload_accepts_tiff_and_bigtiff_magic_and_writes_a_private_file(tmp_path, magic):
    dest = tmp_path / "q.tif"
    n = asyncio.run(save_upload(UploadFile(io.BytesIO(magic + b"x" * 96)), dest, 100))
    assert n == 100 and dest.read_bytes()[:4] == magic
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


@pytest.mark.parametrize("data, status, message", [
    (b"II*\0" + b"x" * 97, 413, "uploaded tile exceeds the upload limit of 0.0001 MB"),
    (b"%PDF-1.7 ...", 422, "uploaded tile is not a GeoTIFF"),
    (b"II", 422, "uploaded tile is not a GeoTIFF"),
    (b"", 422, "uploaded tile is empty"),
])
def test_save_upload_refuses(tmp_path, data, status, message):
    with pytest.raises(UploadError) as e:
        asyncio.run(save_upload(UploadFile(io.BytesIO(data)), tmp_path / "q.tif", 100))
    assert e.value.status == status and e.value.message.startswith(message)
