def packed_nccl_broadcast_producer(*args, **kwargs):
    raise RuntimeError("rehearsal: vLLM server mode (NCCL weight sync) is not simulated")
