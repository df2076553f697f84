"""Every depth fed the main model's h^0 (parallel heads) instead of the previous depth's output (a chain).

Caught by: test_mtp_chain_with_toy_modules_in_closed_form, test_mtp_chain_matches_the_package
"""

from _reference import use_solution

use_solution("07", globals())


def mtp_chain(h, tokens, embed, modules, freqs_cis):
    outputs = []
    for k, module in enumerate(modules, start=1):
        length = tokens.size(1) - k
        outputs.append(module(h[:, :length], embed(tokens[:, k:]), freqs_cis[:length]))
    return outputs
