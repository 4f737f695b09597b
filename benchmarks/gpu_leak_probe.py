"""Which object keeps an Unsloth model on the GPU after ``EvalModel.close()``? (GPU only)

The GPU smoke run (2026-11-27, H100) found 2.1 GB (3B) and 4.7 GB (8B) of CUDA tensors still
allocated after ``evaluation.evaluate_model`` returned and ``gc.collect()`` ran. This probe
loads the 3b profile's model (random weights, built as ``gpu_smoke.py`` builds them) through
``models.load_model``, closes it, and prints, for the largest tensor still alive, every
referrer up the chain with its type and, for containers, the types of what they hold.
Run it with the same command as ``gpu_smoke.py`` (benchmarks/README.md).
"""

from __future__ import annotations

import gc
import inspect
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_smoke  # noqa: E402  (sets the offline environment, puts the repo on sys.path)


def describe(obj) -> str:
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if isinstance(obj, dict):
        return f"{kind} keys={[str(k)[:40] for k in list(obj)[:8]]}"
    if isinstance(obj, (list, tuple, set)):
        return f"{kind} len={len(obj)} items={[type(x).__qualname__ for x in list(obj)[:6]]}"
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return f"{kind} {getattr(obj, '__qualname__', '')} in {getattr(obj, '__module__', '')}"
    if inspect.iscode(obj) or inspect.isframe(obj):
        return kind
    return kind


def chains(obj, depth: int = 10, width: int = 3, seen=None, indent: str = "") -> None:
    seen = seen if seen is not None else {id(obj)}
    if depth == 0:
        return
    refs = [r for r in gc.get_referrers(obj) if id(r) not in seen and not inspect.isframe(r)]
    for r in refs[:width]:
        seen.add(id(r))
        print(f"{indent}<- {describe(r)}")
        chains(r, depth - 1, width if depth > 7 else 1, seen, indent + "  ")


def main() -> int:
    import torch

    from medreason_lib import models
    from medreason_lib.models import prepare_runtime

    work = Path(tempfile.mkdtemp(prefix="leak-"))
    spec = gpu_smoke.MODELS["qwen2.5-3b"]
    folder = work / spec["folder"]
    gpu_smoke.build_model(
        gpu_smoke.CONFIGS / "qwen2.5-3b.json", folder, spec["family"], device="cuda"
    )
    from medreason_lib.settings.profiles import PROFILES

    profile = PROFILES["3b"].replace(model_id=str(folder), use_vllm=False)
    prepare_runtime(profile)
    gc.collect()
    torch.cuda.empty_cache()
    print(f"before load: {torch.cuda.memory_allocated() / 2**30:.3f} GB")
    with models.load_model(profile) as loaded:
        print(f"loaded: {torch.cuda.memory_allocated() / 2**30:.3f} GB ({type(loaded.model)})")
    gc.collect()
    torch.cuda.empty_cache()
    print(f"after close: {torch.cuda.memory_allocated() / 2**30:.3f} GB")
    alive = [o for o in gc.get_objects() if isinstance(o, torch.nn.Module)]
    print(
        f"nn.Modules alive: {len(alive)}; top-level kinds: "
        f"{sorted({type(m).__qualname__ for m in alive})[:20]}"
    )
    big = [o for o in gc.get_objects() if torch.is_tensor(o) and o.is_cuda and o.numel() > 1e7]
    big.sort(key=lambda t: -t.numel())
    for t in big[:2]:
        print(f"\ntensor {list(t.shape)} {t.dtype}:")
        chains(t)
    roots = [m for m in alive if type(m).__qualname__.endswith("ForCausalLM")]
    for m in roots[:1]:
        print(f"\nmodel {type(m).__qualname__}:")
        chains(m, depth=8, width=6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
