"""The attention term halved for the causal mask, which the convention (and the package) does not do.

Caught by: test_training_flops_per_token_by_hand, test_training_flops_per_token_matches_the_package
"""

from _reference import use_solution

use_solution("13", globals())


def training_flops_per_token(activated_matrix_params, n_layers, n_heads, qk_head_dim, v_head_dim, seq_len):
    return 6 * activated_matrix_params + 3 * n_layers * n_heads * (qk_head_dim + v_head_dim) * seq_len
