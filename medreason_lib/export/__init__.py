"""Export and serve a trained adapter: save, merge, verify, GGUF, the Hub, Ollama and vLLM.

Every step takes the profile and the ``TrainingRun`` that ``training.train`` left (notebook 04,
or ``python -m medreason_lib train``) and writes into ``<run>/export/``. This module is the
one the notebooks and the command line use (``export.merge(...)``, ``export.export_run(...)``);
each step lives in a module of its own, below it:

- ``runs``: find a finished run (``check_run``, ``load_run``, ``run_base_model``) and
  ``ExportUnavailable``, the error of an export that cannot run here;
- ``save``: ``save_adapter`` (the adapter, its tokenizer and a model card, in
  ``adapter/``) and ``merge`` (the adapter folded into the base weights, ``merged/``);
- ``verify``: ``verify_adapter``, the proof that the adapter trained and that the merge
  kept it (a LoRA that went wrong usually fails silently: the model behaves like the base);
- ``gguf``: ``to_gguf``, a llama.cpp GGUF file through Unsloth (GPU profiles only;
  ``ExportUnavailable`` elsewhere, raised before anything is loaded);
- ``hub``: ``push_to_hub``, with the token from ``HF_TOKEN`` (never printed or written);
- ``serve``: ``write_modelfile`` and ``write_vllm_files``, an Ollama Modelfile and a
  vLLM ``serve`` command, both carrying the course's system prompt
  (``template.SYSTEM_PROMPT``), which the model was trained with and needs at inference.

``export_run`` (below) is the command line's ``export``: all of them in order, every check
first. Nothing here imports Unsloth: GPU models come from ``models.load_model``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medreason_lib.export.gguf import (  # noqa: F401  (re-exported)
    GGUF_QUANTIZATIONS,
    check_gguf,
    gguf_quantization,
    gguf_unavailable_reason,
    to_gguf,
    unsloth_gguf_kwargs,
)
from medreason_lib.export.hub import (  # noqa: F401  (re-exported)
    REPO_ENV,
    TOKEN_ENV,
    MissingToken,
    check_push,
    hub_repo,
    hub_token,
    push_to_hub,
)
from medreason_lib.export.save import (  # noqa: F401  (re-exported)
    MERGE_METHODS,
    STAMP,
    VERIFY_ROW,
    export_dir,
    load_trained,
    merge,
    model_card,
    save_adapter,
    unsloth_merged_kwargs,
)
from medreason_lib.export.serve import (  # noqa: F401  (re-exported)
    ChatPieces,
    VLLMFiles,
    chat_pieces,
    curl_command,
    example_request,
    modelfile_text,
    ollama_template,
    served_name,
    stop_tokens,
    vllm_chat_template,
    vllm_serve_args,
    write_modelfile,
    write_vllm_files,
)
from medreason_lib.export.verify import (  # noqa: F401  (re-exported)
    MERGE_ATOL,
    AdapterWeights,
    VerifyReport,
    adapter_weights,
    untrained_adapter,
    verification_prompt,
    verify_adapter,
)
from medreason_lib.settings.profiles import Profile
from medreason_lib.training.runs import (  # noqa: F401  (re-exported)
    ExportUnavailable,
    check_run,
    load_run,
    run_base_model,
    run_dir_for,
)

# --------------------------------------------------------------------------- all at once


@dataclass
class ExportResult:
    """What ``export_run`` made (None / empty: not asked for)."""

    adapter: Path
    merged: Path | None = None
    verify: VerifyReport | None = None
    gguf: list[Path] = field(default_factory=list)
    modelfile: Path | None = None
    vllm: VLLMFiles | None = None
    pushed: list[str] = field(default_factory=list)


def export_run(
    profile: Profile,
    run_dir: str | Path | None = None,
    *,
    merge_weights: bool = False,
    gguf: tuple[str, ...] | list[str] = (),
    push: str | None = None,
    modelfile: bool = False,
    verify: bool = True,
) -> ExportResult:
    """The command line's ``export``: every check first (the run, GGUF, the push), then save
    the adapter, merge (also when a Modelfile is asked for) with the vLLM files, verify, GGUF,
    the Modelfile and the push. An adapter that does not verify stops there: nothing is
    converted or pushed (``result.verify.ok`` is False). The merged folder is pushed when
    there is one, else the adapter; GGUF files go to ``gguf/`` in the same repository."""
    check_run(profile, run_dir)
    for quantization in gguf:
        check_gguf(profile, quantization)
    if push is not None:
        check_push(push)
    run = load_run(profile, run_dir)
    result = ExportResult(adapter=save_adapter(profile, run))
    print(f"adapter: {result.adapter}")
    if merge_weights or modelfile:
        result.merged = merge(profile, run)
        result.vllm = write_vllm_files(profile, result.merged)
    if verify:
        result.verify = verify_adapter(profile, run, merged_dir=result.merged)
        print(result.verify)
        if not result.verify.ok:
            print("export stopped: an adapter that did not verify is not converted or pushed")
            return result
    result.gguf = [to_gguf(profile, run, q) for q in gguf]
    if modelfile:
        source = result.gguf[0] if result.gguf else result.merged
        result.modelfile = write_modelfile(
            profile, source, export_dir(run) / "Modelfile", tokenizer_dir=result.merged
        )
    if push is not None:
        folder = result.merged or result.adapter
        result.pushed.append(push_to_hub(folder, push))
        if result.gguf:
            result.pushed.append(push_to_hub(result.gguf[0].parent, push, path_in_repo="gguf"))
    return result
