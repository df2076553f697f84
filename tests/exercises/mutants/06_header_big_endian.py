"""The header length read as a big-endian integer (struct '>Q' instead of '<Q').

Caught by: test_parse_safetensors_header
"""

import json
import struct

from _reference import use_solution

use_solution("06", globals())


def parse_safetensors_header(raw):
    (length,) = struct.unpack(">Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    header.pop("__metadata__", None)
    return header
