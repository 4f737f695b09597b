"""An executed notebook shows no noise: no printed ``{'loss': ...}`` dicts, no "Training Loss"
table, no progress bar frozen short of its end, no PAD/BOS/EOS alignment warning, and the note
on the official evaluation sets once at most (medreason_lib.course.notebook_noise).

Two layers here: the checker itself on hand-made outputs and, so that this never passes for want
of copies (tests/course/test_executed_copies.py checks those ``make course`` wrote), one cheap
notebook executed here that trains, resumes (in the kernel, as
notebook 04 does) and evaluates through the library.
"""

from __future__ import annotations

import textwrap

import nbformat

from conftest import seed_tiny_model
from medreason_lib.course.notebook_noise import as_shown, find_noise
from medreason_lib.settings.progress import (
    FinalLineBar,
    NotebookTextBar,
    progress_bar,
    quiet_libraries,
)


def _notebook(*outputs_per_cell):
    nb = nbformat.v4.new_notebook()
    for outputs in outputs_per_cell:
        cell = nbformat.v4.new_code_cell("pass")
        cell.outputs = [nbformat.from_dict(o) for o in outputs]
        nb.cells.append(cell)
    return nb


def _stream(text, name="stdout"):
    return {"output_type": "stream", "name": name, "text": text}


def _display(plain, html=None, widget=False):
    data = {"text/plain": plain}
    if html:
        data["text/html"] = html
    if widget:
        data["application/vnd.jupyter.widget-view+json"] = {"model_id": "x", "version_major": 2}
    return {"output_type": "display_data", "data": data, "metadata": {}}


def test_each_kind_of_noise_is_found():
    nb = _notebook(
        [_stream("{'loss': '-0.02', 'grad_norm': '0.17'}\n")],
        [_display("<IPython.core.display.HTML object>", "<th>Training Loss</th>")],
        [_display("Loading weights:   0%|          | 0/26 [00:00<?, ?it/s]", widget=True)],
        [_stream("[transformers] The tokenizer has new PAD/BOS/EOS tokens ...\n", "stderr")],
        [_stream(" 91%|#########1| 31/34 [00:06<00:00]")],  # a text bar that never finished
        [
            _stream("  note: medqa's official evaluation set has 1273 items\n"),
            _stream("  note: gsm8k's official evaluation set has 1319 items\n"),
        ],
        [_stream(MIX_REPORT)],
        [_stream("GRPO run 2\n" + MIX_REPORT)],  # the same report again, in a later cell
    )
    kinds = [(n.cell, n.kind) for n in find_noise(nb)]
    assert kinds == [
        (0, "loss-dict"),
        (1, "loss-table"),
        (2, "frozen-bar"),
        (3, "token-alignment"),
        (4, "frozen-bar"),
        (5, "repeated-note"),
        (7, "repeated-block"),
    ]


MIX_REPORT = "".join(f"  label {x}: {i} rows\n" for i, x in enumerate("abcdef"))


def test_model_text_and_prompts_shown_twice_are_not_noise():
    """A collapsed model writes the same completion again and again, and a notebook shows a
    prompt as messages and then rendered: data, not a library report."""
    completion = "<reasoning>\nWeigh the context.\n</reasoning>\n<answer>\nyes\n</answer>\n"
    prompt = "Question: Which drug?\n\nOptions:\nA. One\nB. Two\nC. Three\nD. Four\n\n"
    prompt += "Answer with the letter of the correct option.\n"
    quoted = "".join(f"  | line {i}\n" for i in range(6))
    nb = _notebook(
        [_stream("--- step 10 ---\n" + completion + "\n" + prompt + quoted)],
        [_stream("--- step 20 ---\n" + completion + "\n" + prompt + quoted)],
        [_stream(MIX_REPORT)],
        [_stream(MIX_REPORT)],
    )
    assert [(n.cell, n.kind) for n in find_noise(nb)] == [(3, "repeated-block")]


def test_printed_json_with_a_value_twice_is_not_noise():
    """A run.json whose label targets and reached shares are the same dict prints that block
    twice in one cell: data, not a report said again. A log block repeated is still noise."""
    import json

    shares = {"pubmedqa": {"yes": 0.2, "no": 0.4, "maybe": 0.4}}
    run_json = json.dumps({"label_targets": shares, "label_shares": shares}, indent=2) + "\n"
    nb = _notebook([_stream(run_json)], [_stream(run_json + MIX_REPORT)], [_stream(MIX_REPORT)])
    assert [(n.cell, n.kind) for n in find_noise(nb)] == [(2, "repeated-block")]


def test_a_library_report_said_once_is_not_repeated(capsys):
    from medreason_lib.settings.progress import say_once

    for _ in range(3):
        say_once(MIX_REPORT.rstrip("\n"), again="training mix: as above")
    shown = capsys.readouterr().out
    nb = _notebook([_stream(shown)])
    assert shown.count("label a") == 1 and shown.count("as above") == 2
    assert find_noise(nb) == []


def test_clean_outputs_pass_and_carriage_returns_are_read_as_shown():
    bar = "eval:   0%|          | 0/8 [00:00<?]\reval:  50%|#####     | 4/8"
    bar += "\reval: 100%|##########| 8/8"
    nb = _notebook(
        [_stream(bar + "\n", "stderr")],
        [_display("GRPO: 100%|##########| 30/30 [01:46<00:00, reward=1.69]")],
        [_stream("note: the official evaluation sets have: pubmedqa 500, medqa 1273\n")],
        [_stream("reward 1.139 -> 1.535; loss at step 1: -0.500\n")],
    )
    assert find_noise(nb) == []
    assert as_shown("a\rb\rc\nd") == "c\nd"


def test_course_bar_in_a_notebook_keeps_its_final_state(monkeypatch):
    """The course's bar updates one display output in place: the saved text is the end."""
    shown = []

    class Handle:
        def update(self, data, raw):
            shown[-1] = data["text/plain"]

    def fake_display(data, raw, display_id):
        shown.append(data["text/plain"])
        return Handle()

    monkeypatch.setattr("IPython.display.display", fake_display)
    with NotebookTextBar(total=5, desc="eval", mininterval=0) as bar:
        for _ in range(5):
            bar.update(1)
    assert len(shown) == 1 and "100%" in shown[0] and "5/5" in shown[0]
    assert find_noise(_notebook([_display(shown[0])])) == []


def test_outside_a_notebook_the_bar_is_tqdms_in_a_terminal_and_one_line_elsewhere(monkeypatch):
    import io
    import sys

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # redirected: a log, a captured process
    assert isinstance(progress_bar(3, "x", disable=True), FinalLineBar)
    out = io.StringIO()
    with FinalLineBar(total=3, desc="GRPO", file=out, initial=1, mininterval=0) as bar:
        bar.update(1)
        bar.set_postfix({"reward": "1.5"}, refresh=True)
        bar.update(1)
    assert out.getvalue().count("\n") == 1 and "\r" not in out.getvalue()
    assert (
        "GRPO: 100%" in out.getvalue()
        and "3/3" in out.getvalue()
        and "reward=1.5" in out.getvalue()
    )
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert type(progress_bar(3, "x", disable=True)).__name__ == "tqdm"


def test_quiet_libraries_drops_only_the_harmless_bos_warning():
    import logging

    quiet_libraries()
    quiet_libraries()  # idempotent: one filter
    logger = logging.getLogger("transformers.trainer_utils")
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        for updated in ("{'bos_token_id': None}", "{'pad_token_id': 7}"):
            logger.warning(
                "The tokenizer has new PAD/BOS/EOS tokens that differ from the model config and "
                f"generation config. ... Updated tokens: {updated}."
            )
    finally:
        logger.removeHandler(handler)
    assert len(seen) == 1 and "pad_token_id" in seen[0]
    assert sum(type(f).__name__ == "_DropHarmlessAlignment" for f in logger.filters) == 1


CELLS = [
    """
    from medreason_lib import evaluation, models, training
    from medreason_lib.course import start

    profile = start("noise_check", profile="tiny")
    small = profile.replace(
        max_steps=2, save_steps=2, sft_warmup_steps=4, train_size=8, per_device_train_batch_size=8
    )
    run = training.train(small, run_dir=RUN_DIR, sample_every=1)
    """,
    """
    longer = small.replace(max_steps=3)  # resumed in the kernel, as notebook 04 does
    resumed = training.train(longer, run_dir=RUN_DIR, resume=True, sample_every=0)
    """,
    """
    items = evaluation.load_benchmarks(n=2, seed=0)
    again = evaluation.load_benchmarks(n=2, seed=0)
    with models.load_model(small) as loaded:
        report = evaluation.evaluate((loaded.model, loaded.tokenizer), items, profile=small)
    print(report.accuracy)
    """,
]


def test_a_notebook_that_trains_and_evaluates_is_clean(tmp_path, monkeypatch):
    """Executes a notebook that trains 2 GRPO steps (after a 4-step warm start), resumes for a
    third in the kernel, and evaluates 10 items: it must show no noise, and the course's own
    bars must have rendered, finished. The GRPO steps are of 2 prompts (8 completions): the
    check is what the notebook shows, not what it learns."""
    from nbclient import NotebookClient

    monkeypatch.setenv("MEDREASON_RUNS", str(tmp_path / "runs"))
    # a cache without warm starts: the warm start must really run (and show its bar), not
    # come from those that other tests or `make course` cached on this machine; the tiny
    # model is copied in, not built again
    seed_tiny_model(tmp_path / "cache")
    monkeypatch.setenv("MEDREASON_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDREASON_PROFILE", "tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # ipykernel stops echoing what subprocesses write (fd capture) when it sees pytest's
    # variable; `make course` runs without it, and so must this kernel
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    run_dir = str(tmp_path / "runs" / "tiny" / "grpo")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"RUN_DIR = {run_dir!r}")]
    nb.cells += [nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in CELLS]
    NotebookClient(nb, timeout=600, kernel_name="python3").execute()

    noise = find_noise(nb)
    assert not noise, "\n".join(str(n)[:200] for n in noise)
    plain = [
        o["data"]["text/plain"]
        for cell in nb.cells
        for o in cell.outputs
        if o["output_type"] == "display_data" and "text/plain" in o["data"]
    ]
    assert any(t.startswith("GRPO") and "2/2" in t and "100%" in t for t in plain), plain
    assert any(t.startswith("SFT warm start") and "4/4" in t for t in plain), plain
    assert any(t.startswith("eval") and "10/10" in t and "100%" in t for t in plain), plain
    resumed = nb.cells[2].outputs
    printed = "".join(o.get("text", "") for o in resumed)
    assert "resuming from" in printed and "checkpoint-2" in printed, printed
    shown = [o["data"].get("text/plain", "") for o in resumed if o["output_type"] == "display_data"]
    assert any(t.startswith("GRPO") and "3/3" in t and "100%" in t for t in shown), resumed
