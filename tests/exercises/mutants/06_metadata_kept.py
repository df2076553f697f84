"""The "__metadata__" entry kept among the tensors.

Caught by: test_parse_safetensors_header
"""

import json
import struct

from _reference import use_solution

use_solution("06", globals())


def parse_safetensors_header(raw):
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + length])
