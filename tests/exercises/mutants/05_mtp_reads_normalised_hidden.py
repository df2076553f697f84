"""The MTP modules fed the main model's hidden states AFTER the final norm instead of before it.

Caught by: test_build_model_matches_the_package_forward
"""

import torch

from _reference import use_solution

_solution = use_solution("05", globals())


class _Normed(_solution._Model):
    def forward(self, tokens):
        seq = tokens.size(1)
        freqs_cis = precompute_freqs_cis(self.config, seq, tokens.device)
        h = self.embed(tokens)
        for layer in self.layers:
            h = layer(h, freqs_cis)
        h = self.norm(h)
        depth_logits, h_k = [], h
        for k, module in enumerate(self.mtp, start=1):
            length = seq - k
            combined = module.eh_proj(torch.cat([module.enorm(self.embed(tokens[:, k:])),
                                                 module.hnorm(h_k[:, :length])], dim=-1))
            h_k = module.block(combined, freqs_cis[:length])
            depth_logits.append(self.head(module.norm(h_k)))
        return self.head(h), depth_logits


def build_model(config):
    return _Normed(config)
