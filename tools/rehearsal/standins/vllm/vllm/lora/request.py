"""``LoRARequest``: how an adapter reaches a vLLM engine (a name, an id and a folder)."""

from dataclasses import dataclass


@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str = ""
    lora_tensors: dict | None = None
    lora_config: dict | None = None
