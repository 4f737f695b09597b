"""``delete_vllm`` (contract ``delete-vllm``): drop the engine's model executor, and give its
GPU memory back once nothing else holds the engine."""

import gc


def delete_vllm(llm=None):
    if llm is not None:
        del llm.llm_engine.model_executor
        llm._rehearsal_released = True
        del llm
    gc.collect()
