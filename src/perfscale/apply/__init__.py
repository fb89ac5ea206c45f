"""Turn a tune result into something to call in your own code.

    import perfscale.apply
    enc = perfscale.apply.encoder("tuned.json")     # or the result object, or its --json dict
    vectors = enc.encode(["a sentence", "another"])  # numpy [n, dim], L2-normalised

    kwargs = perfscale.apply.decoder(decoder_result)  # from_pretrained / generate kwargs + runtime settings
"""

from perfscale.apply.decoder import decoder
from perfscale.apply.encoder import encoder

__all__ = ["decoder", "encoder"]
