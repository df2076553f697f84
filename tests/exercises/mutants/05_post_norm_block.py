"""A post-norm block: the residual sum is normalised (x = norm(x + attn(x))) instead of each sub-layer's input.

Caught by: test_block_forward_matches_the_package_block, test_build_model_matches_the_package_forward
"""

from _reference import use_solution

_solution = use_solution("05", globals())


def block_forward(x, freqs_cis, attn_norm, attn, ffn_norm, ffn):
    h = attn_norm(x + attn(x, freqs_cis))
    return ffn_norm(h + ffn(h))


_solution.block_forward = block_forward  # build_model's blocks use it too
