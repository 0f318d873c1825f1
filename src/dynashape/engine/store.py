"""Engine directories: written whole or not at all, read back with every artifact checked.

::

    engine.json        format, dynashape version, backend, device, dtype, artifacts + sha256, compile args
    plan.json          the ShapePlan: what the engine accepts and how it runs
    hf_config.json     the model's Hugging Face config (the eager reference for verify)
    weights.safetensors  the lean model's weights (generation engines; loaded straight, no HF model)
    program.pt2        the exported no-cache program (forward engines: onnx, tensorrt)
    tokenizer/         the model's tokenizer, when it had one
    ...                what the backend adds (compiled functions, AOTInductor packages, kernel binaries)

An engine is written to a temporary directory next to the target and renamed into place. Without
``force`` the rename refuses an existing target, so of two builds racing into one directory exactly
one lands and the other fails with a one-line error; with ``force`` the old engine is moved aside
first and removed only after the new one is in place.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

from .. import __version__
from ..errors import BackendError, EngineError

ENGINE_FORMAT = 2


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, in sorted order)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def is_engine_dir(target) -> bool:
    """Whether a CLI/API target names an engine directory rather than a model: it holds engine.json, or
    it is a directory without a model's config.json (loading it as an engine then says what is missing)."""
    path = Path(target)
    return (path / "engine.json").exists() or (path.is_dir() and not (path / "config.json").exists())


def rebuild_command(args: dict) -> str:
    """``dynashape compile`` command line from compile_args (model, seq, batch, backend, device, dtype, out)."""
    parts = ["dynashape compile", str(args.get("model", "MODEL"))]
    for key in ("seq", "batch", "backend", "device", "dtype"):
        if args.get(key):
            parts.append(f"--{key} {args[key]}")
    parts.append(f"-o {args.get('out', 'DIR')} --force")
    return " ".join(parts)


def check_target(directory: Path, force: bool) -> None:
    """Refuse before any expensive work: an existing target without --force, or a non-engine with it."""
    directory = Path(directory)
    if not directory.exists():
        return
    if not force:
        raise EngineError(f"{directory} already exists.", "pass --force to replace it, or choose another -o.")
    if not directory.is_dir() or (any(directory.iterdir()) and not (directory / "engine.json").exists()):
        raise EngineError(f"{directory} exists and is not a dynashape engine; --force only replaces engines.",
                          "choose another -o, or remove it yourself.")


def new_tmp(directory: Path) -> Path:
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def swap_into_place(tmp: Path, directory: Path, force: bool) -> None:
    """Rename tmp to directory. Without force an existing directory is never replaced (atomically)."""
    if not force:
        try:
            os.rename(tmp, directory)        # fails on an existing non-empty directory
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
        raise EngineError(f"{directory} was written by another build while this one ran; it was left as that "
                          "build wrote it.", "pass --force to replace it, or choose another -o.")
    old = None
    if directory.exists():
        old = directory.parent / f".{directory.name}.old-{os.getpid()}"
        os.replace(directory, old)
    try:
        os.replace(tmp, directory)
    except BaseException:
        if old is not None:
            os.replace(old, directory)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_meta(tmp: Path, meta: dict, files: dict[str, str]) -> dict:
    meta = dict(meta, format=ENGINE_FORMAT, dynashape=__version__,
                artifacts={k: {"file": f, "sha256": sha256_path(tmp / f)} for k, f in files.items()})
    (tmp / "engine.json").write_text(json.dumps(meta, indent=2))
    return meta


def read_meta(directory: Path) -> dict:
    """engine.json, checked: format, version, backend, and every artifact's presence and sha256."""
    from ..backends import BACKENDS, get_backend

    directory = Path(directory)
    rebuild = "rebuild it with dynashape compile ... -o DIR --force"
    if not directory.is_dir():
        raise EngineError(f"engine directory {directory} does not exist.",
                          "build one: dynashape compile random:gpt2 --seq 1:1024 -o " + str(directory))
    try:
        meta = json.loads((directory / "engine.json").read_text())
    except FileNotFoundError:
        raise EngineError(f"{directory} has no engine.json: it is not a dynashape engine (or a build was cut off).",
                          rebuild) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EngineError(f"{directory}/engine.json is corrupt.", rebuild) from None
    if not isinstance(meta, dict):
        raise EngineError(f"{directory}/engine.json is corrupt.", rebuild)
    if isinstance(meta.get("compile_args"), dict):
        meta["compile_args"]["out"] = str(directory)  # the rebuild hint names where it is now
        rebuild = "rebuild it: " + rebuild_command(meta["compile_args"])
    if meta.get("format") != ENGINE_FORMAT:
        older = isinstance(meta.get("format"), int) and meta["format"] < ENGINE_FORMAT
        raise EngineError(f"{directory} has engine format {meta.get('format')!r}" + (
            " (an older dynashape's engine, which generated without a KV cache)" if older else "") +
            f"; this dynashape reads format {ENGINE_FORMAT}.", rebuild)
    if str(meta.get("dynashape", "")).split(".")[:2] != __version__.split(".")[:2]:
        raise EngineError(f"{directory} was built by dynashape {meta.get('dynashape')}, this is {__version__}.", rebuild)
    try:
        get_backend(meta.get("backend", "?"))
    except BackendError as e:  # an unknown name means a corrupt engine.json; a missing dependency keeps its fix
        raise EngineError(f"engine {directory} needs backend {meta.get('backend')!r}: {e.message}",
                          e.fix if meta.get("backend") in BACKENDS else rebuild) from None
    for name, art in meta.get("artifacts", {}).items():
        path = directory / art["file"]
        if not path.exists():
            raise EngineError(f"{directory} is missing its {name} artifact {art['file']}.", rebuild)
        if sha256_path(path) != art["sha256"]:
            raise EngineError(f"{directory}/{art['file']} does not match its checksum (truncated or edited).", rebuild)
    for need in ("plan.json", "hf_config.json"):
        if not (directory / need).is_file():
            raise EngineError(f"{directory} is missing {need}.", rebuild)
    meta["rebuild"] = rebuild
    return meta
