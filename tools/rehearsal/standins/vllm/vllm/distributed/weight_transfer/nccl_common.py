def trainer_init(*args, **kwargs):
    raise RuntimeError("rehearsal: vLLM server mode (NCCL weight sync) is not simulated")
