"""The softmax scale 1/sqrt(qk_head_dim), without YaRN's m^2 (0.0722 instead of 0.1352 for V3).

Caught by: test_mla_attention_equals_plain_attention_and_the_package
"""

from _reference import use_solution

_solution = use_solution("03", globals())
_solution.softmax_scale = lambda config: config.qk_head_dim ** -0.5
