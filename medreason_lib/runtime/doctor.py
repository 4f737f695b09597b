"""``python -m medreason_lib doctor``: is this runtime ready for the course, and if not, why.

One line per fact: the GPU (name, memory, compute capability), driver and CUDA versions, bf16
support, the versions of torch, transformers, trl, peft, unsloth, unsloth_zoo, vllm,
vllm-bnb-plugin (a 4-bit base with vLLM needs it) and bitsandbytes against the pins
(``requirements*.txt``, ``install.read_pins``), free disk, whether ``HF_TOKEN`` is set (never
its value), whether the hub answers, and the profile this runtime would pick with the memory
planner's verdict (its plan times ``1 + memory.margin()`` against the GPU). Then one line per
problem with its fix (exit status 1); warnings (no token, a tight disk) do not fail.

It reads the GPU with ``nvidia-smi`` (``install.read_gpu``) and package versions from their
metadata: it never imports torch or initialises CUDA, so it runs on any machine. The checks
are functions of a ``Facts`` record: ``gather()`` reads the machine, ``diagnose(facts)``
judges them; the tests pass invented facts (a T4, an old driver, a mismatched vLLM).
"""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from medreason_lib.models import memory
from medreason_lib.runtime import install, prefetch
from medreason_lib.runtime.install import CUDA13_MIN_DRIVER, GpuFacts, UnsupportedRuntime
from medreason_lib.settings.errors import UserError
from medreason_lib.settings.profiles import (
    ENV_VAR,
    PROFILES,
    Profile,
    gpu_memory_gb,
    named_profile,
    profile_for_gpu,
)

# names as requirements*.txt spell them
PACKAGES = ("torch", "transformers", "trl", "peft", "unsloth", "unsloth_zoo", "vllm",
            "vllm-bnb-plugin", "bitsandbytes")  # fmt: skip
BNB_PLUGIN = "vllm-bnb-plugin"  # vLLM >= 0.28 loads bitsandbytes 4-bit weights only with it
FACT_WIDTH = 17  # the name column of the fact lines
BF16_MIN_COMPUTE = (8, 0)  # Ampere; a T4 (7.5) has none
TINY_DISK_GB = 1.0  # the tiny model, runs and reports: an allowance (they take a few MB)
DATASETS_DISK_GB = 3.0  # the datasets a GPU profile reads, prepared: an allowance, not measured
HUB_TIMEOUT_S = 5.0


@dataclass
class Facts:
    """What ``diagnose`` judges. ``gather()`` fills it from the machine; tests invent it."""

    gpu: GpuFacts | None = None
    gpu_memory_gb: float | None = None
    cuda_driver: str | None = None  # the newest CUDA the driver supports (nvidia-smi)
    torch_cuda: str | None = None  # the CUDA torch was built for (None: a CPU build)
    versions: dict[str, str | None] = field(default_factory=dict)  # PACKAGES -> installed
    free_disk_gb: float | None = None
    disk_path: str = ""
    hf_token: bool = False
    saved_login: bool = False  # a token saved by `hf auth login`
    offline: bool = False  # HF_HUB_OFFLINE
    hub_error: str | None = None  # None: reachable, or not asked (offline)
    hub_seconds: float | None = None
    requested_profile: str | None = None  # --profile, else $MEDREASON_PROFILE
    cached: dict[str, bool] = field(default_factory=dict)  # offline: prefetch label -> cached

    @property
    def bf16(self) -> bool | None:
        return None if self.gpu is None else self.gpu.compute_capability >= BF16_MIN_COMPUTE


@dataclass
class Finding:
    what: str
    fix: str
    fatal: bool = True  # False: a warning


@dataclass
class Diagnosis:
    profile: Profile
    lines: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.fatal]

    @property
    def ok(self) -> bool:
        return not self.problems

    def fact(self, name: str, value: str) -> None:
        self.lines.append(f"{name:<{FACT_WIDTH}}{value}")

    def problem(self, what: str, fix: str, *, fatal: bool = True) -> None:
        self.findings.append(Finding(what, fix, fatal))

    def __str__(self) -> str:
        out = list(self.lines)
        for f in self.findings:
            out.append(f"{'PROBLEM' if f.fatal else 'warning'}: {f.what}. Fix: {f.fix}")
        n = len(self.problems)
        verdict = f"profile {self.profile.name!r}: " + (
            "ready" if n == 0 else f"NOT ready, {n} problem{'s' * (n != 1)}"
        )
        return "\n".join([*out, verdict])


# --------------------------------------------------------------------------- reading the machine


def read_cuda_driver() -> str | None:
    """The CUDA version in ``nvidia-smi``'s header: the newest the driver supports."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"CUDA Version:\s*([0-9.]+)", out)
    return match.group(1) if match else None


def read_torch_cuda() -> str | None:
    """The CUDA version torch was built for, read from ``torch/version.py`` (not imported)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = Path(spec.submodule_search_locations[0], "version.py").read_text()
    except OSError:
        return None
    match = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return match.group(1) if match else None


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def hub_error(endpoint: str | None = None, timeout: float = HUB_TIMEOUT_S) -> str | None:
    """None when a HEAD request to the hub (``HF_ENDPOINT``) gets any HTTP answer; else why."""
    endpoint = endpoint or os.getenv("HF_ENDPOINT") or "https://huggingface.co"
    request = urllib.request.Request(endpoint, method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{endpoint}: {type(reason).__name__}: {reason}"
    return None


def gather(profile_name: str | None = None, *, check_hub: bool = True) -> Facts:
    """The facts of this machine (no torch import, no CUDA initialisation)."""
    gpu = install.read_gpu()
    home = prefetch._hf_home()
    disk = next((p for p in (home, *home.parents) if p.exists()), Path("/"))
    facts = Facts(
        gpu=gpu,
        gpu_memory_gb=gpu_memory_gb() if gpu else None,
        cuda_driver=read_cuda_driver() if gpu else None,
        torch_cuda=read_torch_cuda(),
        versions={name: installed_version(name) for name in PACKAGES},
        free_disk_gb=shutil.disk_usage(disk).free / 2**30,
        disk_path=str(disk),
        hf_token=bool(os.getenv("HF_TOKEN")),
        saved_login=_saved_login(home),
        offline=_truthy(os.getenv("HF_HUB_OFFLINE")),
        requested_profile=profile_name or os.getenv(ENV_VAR) or None,
    )
    if not facts.offline and check_hub:
        began = time.perf_counter()
        facts.hub_error = hub_error()
        facts.hub_seconds = time.perf_counter() - began
    profile = pick_profile(facts)
    if facts.offline and not profile.is_tiny:
        facts.cached = {i.label: prefetch.is_cached(i) for i in prefetch.needs(profile)}
    return facts


def _saved_login(home: Path) -> bool:
    token_path = os.getenv("HF_TOKEN_PATH") or home / "token"
    return Path(token_path).is_file()


# --------------------------------------------------------------------------- judging


def pick_profile(facts: Facts) -> Profile:
    """The profile ``profiles.get_profile`` would return, from the facts alone."""
    name = facts.requested_profile or profile_for_gpu(facts.gpu_memory_gb)
    try:
        profile = named_profile(name)
    except (ValueError, UserError):  # diagnose() reports it
        profile = PROFILES["tiny"]
    if profile.use_vllm and facts.gpu is not None and facts.versions.get("vllm") is None:
        profile = profile.replace(use_vllm=False)  # as get_profile does without vLLM
    return profile


def _pins() -> tuple[dict[str, str], dict[str, str]]:
    """(the course runtime's pins, the GPU stack's pins) from the requirements files."""
    core = install.read_pins(install.ROOT / "requirements.txt").get("", {})
    gpu = {}
    for section in install.read_pins(install.ROOT / "requirements-gpu.txt").values():
        gpu |= section
    return core, gpu


def _same(installed: str, pin: str) -> bool:
    return installed.split("+")[0] == pin.split("+")[0]


def diagnose(facts: Facts, pins: tuple[dict, dict] | None = None) -> Diagnosis:
    """Judge ``facts``: the lines to print and the problems, each with its fix."""
    profile = pick_profile(facts)
    d = Diagnosis(profile)
    if facts.requested_profile:
        try:
            named_profile(facts.requested_profile)
        except (ValueError, UserError) as exc:
            d.problem(
                f"profile {facts.requested_profile!r} (--profile or ${ENV_VAR}): {exc}",
                f"use one of {', '.join(PROFILES)}, or a profile file (.toml/.json)",
            )
    needs_gpu = profile.uses_unsloth
    plan_error = _check_gpu(d, facts, profile, needs_gpu)
    _check_packages(d, facts, profile, pins or _pins(), plan_error)
    _check_disk(d, facts, profile)
    _check_hub(d, facts, profile)
    _check_fit(d, facts, profile)
    return d


def _check_gpu(d: Diagnosis, facts: Facts, profile: Profile, needs_gpu: bool):
    """GPU, driver/CUDA and bf16 lines. Returns the install plan (or None without a GPU)."""
    gpu = facts.gpu
    if gpu is None:
        d.fact("GPU", "none (nvidia-smi found no NVIDIA GPU)")
        d.fact("driver/CUDA", "no NVIDIA driver")
        d.fact("bf16", "no GPU")
        if needs_gpu:
            d.problem(
                f"profile {profile.name!r} needs an NVIDIA GPU and this runtime has none",
                "Colab: Runtime > Change runtime type > T4 GPU; or run the CPU profile "
                f"(--profile tiny, or {ENV_VAR}=tiny)",
            )
        return None
    cap = ".".join(map(str, gpu.compute_capability))
    mem = f"{facts.gpu_memory_gb:.1f} GB" if facts.gpu_memory_gb else "memory unknown"
    d.fact("GPU", f"{gpu.name}, {mem}, compute capability {cap}")
    torch_cuda = f"torch built for CUDA {facts.torch_cuda}" if facts.torch_cuda else "torch: "
    torch_cuda += "" if facts.torch_cuda else "no CUDA build (CPU or not installed)"
    d.fact("driver/CUDA", f"driver {gpu.driver} (CUDA {facts.cuda_driver or '?'}); {torch_cuda}")
    if facts.bf16:
        d.fact("bf16", f"yes (compute capability {cap} >= 8.0)")
    else:
        d.fact("bf16", f"no (compute capability {cap} < 8.0): fp16 training (gpt-oss: float32)")
    if not needs_gpu:
        if gpu.driver_major < CUDA13_MIN_DRIVER:
            d.fact("note", f"driver below {CUDA13_MIN_DRIVER}: fine for tiny, not for GPU profiles")
        return None
    # what the setup cell installs for this GPU (vLLM as the profile asks, before the fallback)
    wanted = profile.replace(use_vllm=PROFILES[profile.name].use_vllm)
    try:
        return install.plan_install("04", wanted, gpu)
    except UnsupportedRuntime as exc:
        d.problem(f"NVIDIA driver {gpu.driver} is older than {CUDA13_MIN_DRIVER}", str(exc))
        # judge the packages as they would be installed once the driver is new enough
        newer = GpuFacts(gpu.name, str(CUDA13_MIN_DRIVER), gpu.compute_capability)
        return install.plan_install("04", wanted, newer)


def _check_packages(d, facts: Facts, profile: Profile, pins, plan) -> None:
    core, gpu_pins = pins
    on_gpu = facts.gpu is not None and profile.uses_unsloth
    wanted = {r.split("==")[0] for r in plan.requirements} if plan else set()
    skipped = dict(plan.skipped) if plan else {}
    if BNB_PLUGIN in wanted and not profile.load_in_4bit:  # installed with vLLM, unused
        wanted.discard(BNB_PLUGIN)
        skipped[BNB_PLUGIN] = f"profile {profile.name!r} loads 16-bit weights"
    for name in PACKAGES:
        have, pin = facts.versions.get(name), core.get(name) or gpu_pins.get(name)
        in_core = name in core
        kind = "course pin" if in_core else "GPU pin"
        shown = f"{have or 'not installed'}" + (f" ({kind} {pin})" if pin else "")
        if have and pin and not _same(have, pin) and (in_core or on_gpu):
            if name in skipped:
                fix = f"pip uninstall -y {name} (not used here: {skipped[name]})"
            else:
                fix = (
                    f"pip install '{name}=={pin}' (or rerun the notebook's setup cell); "
                    "never upgrade one of unsloth/vllm/trl/transformers alone (README, "
                    "Troubleshooting: version drift)"
                )
            d.fact(name, shown + " MISMATCH")
            d.problem(f"{name} {have} is installed, the course pins {pin}", fix)
        elif have is None and (in_core or name in wanted):
            d.fact(name, shown + " MISSING")
            where = "requirements.txt" if in_core else "requirements-gpu.txt"
            d.problem(
                f"{name} is not installed ({where} pins {pin})",
                "run the notebook's setup cell (Colab) or `make setup`",
            )
        elif have is None and name in skipped:
            d.fact(name, f"{shown}: not needed here ({skipped[name]})")
        elif not in_core and not on_gpu:
            d.fact(name, shown + ": GPU stack, not used by the tiny profile on a CPU")
        else:
            d.fact(name, shown + (" ok" if have and pin else ""))


def disk_needed_gb(profile: Profile) -> tuple[float, float]:
    """(to load and train, to also merge and export), GB. Estimates from the architecture:
    the weights Unsloth loads (4-bit or 16-bit) + ``DATASETS_DISK_GB``; then the 16-bit
    shards the merge reads and the merged 16-bit copy it writes."""
    if profile.is_tiny:
        return TINY_DISK_GB, TINY_DISK_GB
    params = memory.spec_of(profile).total_params
    load = params * (memory.BYTES_4BIT if profile.load_in_4bit else 2) / 2**30
    base = load + DATASETS_DISK_GB
    return base, base + 2 * params * 2 / 2**30


def _check_disk(d: Diagnosis, facts: Facts, profile: Profile) -> None:
    if facts.free_disk_gb is None:
        d.fact("disk", "free space unknown")
        return
    need, export = disk_needed_gb(profile)
    where = f"{facts.free_disk_gb:.1f} GB free at {facts.disk_path or '?'}"
    if profile.is_tiny:
        d.fact("disk", f"{where} (profile 'tiny' needs well under {need:.0f} GB)")
    else:
        d.fact(
            "disk",
            f"{where} (profile {profile.name!r}: ~{need:.0f} GB to train, ~{export:.0f} GB "
            "with notebook 08's merged export; estimates)",
        )
    fix = "free space, or point HF_HOME (the model cache) at a larger disk"
    if facts.free_disk_gb < need:
        d.problem(f"{facts.free_disk_gb:.1f} GB free, about {need:.0f} GB needed", fix)
    elif facts.free_disk_gb < export:
        d.problem(
            f"{facts.free_disk_gb:.1f} GB free: enough to train, not for notebook 08's merged "
            f"export (about {export:.0f} GB in all)",
            fix,
            fatal=False,
        )


def _check_hub(d: Diagnosis, facts: Facts, profile: Profile) -> None:
    if facts.hf_token:
        d.fact("HF_TOKEN", "set (not shown)")
    elif facts.saved_login:
        d.fact("HF_TOKEN", "not set; a saved login exists (hf auth login)")
    else:
        d.fact("HF_TOKEN", "not set")
        d.problem(
            "HF_TOKEN is not set",
            "public models and datasets download without it, but anonymous downloads are "
            "rate-limited sooner (a room: prefetch once, docs/instructors.md) and notebook "
            "08's push needs one: set HF_TOKEN (Colab: the key icon, Secrets)",
            fatal=False,
        )
    if facts.offline:
        d.fact("hub", "offline (HF_HUB_OFFLINE=1): not contacted; loaders read the cache only")
        missing = [label for label, ok in facts.cached.items() if not ok]
        if missing and not profile.is_tiny:
            shown = "; ".join(" ".join(m.split()) for m in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            d.problem(
                f"offline, and {len(missing)} of the {len(facts.cached)} repositories profile "
                f"{profile.name!r} reads are not cached: {shown}{more}",
                f"python -m medreason_lib prefetch --profile {profile.name} on a machine "
                "that is online, into the folder HF_HOME points at",
            )
        elif facts.cached:
            d.fact("prefetched", f"all {len(facts.cached)} repositories of {profile.name!r}")
        return
    if facts.hub_error is None and facts.hub_seconds is None:
        d.fact("hub", "not checked")
    elif facts.hub_error is None:
        d.fact("hub", f"reachable (HEAD answered in {facts.hub_seconds:.1f} s)")
    elif profile.is_tiny:
        d.fact("hub", f"unreachable ({facts.hub_error}); the tiny profile does not need it")
    else:
        d.fact("hub", f"unreachable: {facts.hub_error}")
        d.problem(
            f"the hub cannot be reached and profile {profile.name!r} downloads its model and "
            "datasets",
            "check the network or proxy (HF_ENDPOINT); or prefetch on a machine that is online "
            "and run with HF_HOME=<that folder> HF_HUB_OFFLINE=1",
        )


def _check_fit(d: Diagnosis, facts: Facts, profile: Profile) -> None:
    if facts.requested_profile:
        why = f"chosen with --profile / ${ENV_VAR}"
    elif facts.gpu_memory_gb is None:
        why = "picked: no GPU"
    else:
        why = f"picked: GPU {facts.gpu_memory_gb:.1f} GB"
    if PROFILES[profile.name].use_vllm and not profile.use_vllm:
        why += "; generates without vLLM (not installed)"
    d.fact("profile", f"{profile.name} ({why})")
    if not profile.uses_unsloth:
        d.fact("memory plan", f"{profile.name} loads with transformers: no Unsloth memory plan")
        return
    if facts.gpu_memory_gb is None:
        d.fact("memory plan", f"no GPU; smallest that fits: {memory.smallest_gpu(profile)}")
        return
    plan = memory.plan_for_profile(profile, gpu=round(facts.gpu_memory_gb, 2), bf16=facts.bf16)
    verdict = "fits" if plan.fits() else "does NOT fit"
    d.fact(
        "memory plan",
        f"GRPO {plan.total_gb:.1f} GB, x{1 + memory.margin():.3f} margin = "
        f"{plan.required_gb:.1f} GB on {facts.gpu_memory_gb:.1f} GB: {verdict} (estimate)",
    )
    if not plan.fits():
        first = plan.advice[0] if plan.advice else "a smaller profile"
        d.problem(
            f"profile {profile.name!r} does not fit this GPU with the planner's margin",
            f"lower first {first}; or a GPU such as {memory.smallest_gpu(profile)}",
        )
    for reason in plan.impractical:
        d.problem(f"profile {profile.name!r} is impractical here", reason)


def run(profile_name: str | None = None, *, check_hub: bool = True) -> int:
    """Gather, judge and print; the exit status (1 when there is a problem)."""
    diagnosis = diagnose(gather(profile_name, check_hub=check_hub))
    print(diagnosis)
    return 0 if diagnosis.ok else 1
