"""A frame's message is written by soccer itself, with one copy of its pixels
(soccer/video.py): it must be, byte for byte, what protobuf writes for the same fields."""

import cv2
import numpy as np
import pytest

from api import soccer_pb2
from soccer import video


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 3, 3), (45, 80, 3), (1080, 1920, 3)])
@pytest.mark.parametrize("encoding", [soccer_pb2.RAW, soccer_pb2.JPEG])
def test_a_frames_message_is_what_protobuf_writes(
    shape: tuple[int, int, int], encoding: soccer_pb2.Encoding.ValueType
) -> None:
    frame = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    if encoding == soccer_pb2.RAW:
        data, data_shape = frame.tobytes(), str(frame.shape)
    else:
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])
        assert ok
        data, data_shape = jpeg.tobytes(), f"({jpeg.size},)"
    expected = soccer_pb2.Video(
        data=data,
        data_type="uint8",
        data_shape=data_shape,
        width=shape[1],
        height=shape[0],
        encoding=encoding,
        frame_index=1234567,
        timestamp=1234567 / 29.97,
    )
    written = video.encode(frame, encoding, 80, 1234567, 29.97)
    assert written == expected.SerializeToString()
    assert soccer_pb2.Video.FromString(written) == expected
