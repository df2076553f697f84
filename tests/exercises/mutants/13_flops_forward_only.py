"""2 N (the forward pass) instead of 6 N: the backward pass's two matmuls per weight forgotten.

Caught by: test_training_flops_per_token_by_hand, test_training_flops_per_token_matches_the_package
"""

from _reference import use_solution

use_solution("13", globals())


def training_flops_per_token(activated_matrix_params, n_layers, n_heads, qk_head_dim, v_head_dim, seq_len):
    return 2 * activated_matrix_params + 6 * n_layers * n_heads * (qk_head_dim + v_head_dim) * seq_len
