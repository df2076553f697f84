"""MTP predictions through the main model's final norm instead of each module's own norm (shared_head.norm).

Caught by: test_build_model_matches_the_package_forward
"""

import torch

from _reference import use_solution

_solution = use_solution("05", globals())


class _SharedNorm(_solution._Model):
    def forward(self, tokens):
        logits, _ = super().forward(tokens)
        seq = tokens.size(1)
        freqs_cis = precompute_freqs_cis(self.config, seq, tokens.device)
        h = self.embed(tokens)
        for layer in self.layers:
            h = layer(h, freqs_cis)
        depth_logits = []
        for k, module in enumerate(self.mtp, start=1):
            length = seq - k
            combined = module.eh_proj(torch.cat([module.enorm(self.embed(tokens[:, k:])),
                                                 module.hnorm(h[:, :length])], dim=-1))
            h = module.block(combined, freqs_cis[:length])
            depth_logits.append(self.head(self.norm(h)))
        return logits, depth_logits


def build_model(config):
    return _SharedNorm(config)
