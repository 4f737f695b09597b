"""8-bit optimisers: the Unsloth stand-in runs torch's AdamW instead (after recording that
the course asked for ``adamw_8bit``), so nothing should construct these here."""


class AdamW8bit:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("rehearsal: bitsandbytes' 8-bit Adam cannot run on the CPU")


PagedAdamW8bit = AdamW8bit
