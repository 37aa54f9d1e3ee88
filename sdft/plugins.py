"""Plugins: modules outside this repository that register a task or a method of your own, imported before any
task or method name is looked up.

A plugin spec is one of

  * a dotted module name importable from ``sys.path`` (the current directory first, for ``python -m``), e.g.
    ``my_lab.sdft_tasks``;
  * a path to a ``.py`` file, imported under a name of its own (``sdft_plugin_<stem>_<hash of its path>``);
  * a path to a directory: every ``*.py`` file directly in it, in name order.

Specs come from ``--include MODULE_OR_PATH`` (repeatable: ``python -m sdft.train``, ``python -m eval.run`` and every
section script), the config key ``include`` (a list, settable in presets, recipes and as ``key=value``) and
``$SDFT_INCLUDE`` (specs separated by ``os.pathsep``; imported by the registries on their first look-up, so in
every process). A run records the specs it imported in its ``config.yaml`` (``include``, relative paths made
absolute), so ``eval.run`` on its directory and a rerun into it import them again. Importing a spec twice
imports it once.

:class:`Registry` is what the method and task registries (``sdft.registry``, ``data_prep.registry``) are: name ->
entry, the repository's own entries first, ``$SDFT_INCLUDE`` imported on the first look-up.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from sdft.errors import UserError

ENV_VAR = "SDFT_INCLUDE"
HINT = f"--include MODULE_OR_PATH (or ${ENV_VAR})"  # how a name of your own becomes known, for error messages


class PluginError(UserError, ValueError):
    """A plugin spec that names nothing importable, or whose import failed (the original exception chained); the
    message starts with the spec."""


def is_path_spec(spec: str) -> bool:
    """Whether a spec names a file or directory (a path separator, a ``.py`` ending, or an existing path) rather than
    a dotted module name."""
    return os.sep in spec or "/" in spec or spec.endswith(".py") or os.path.exists(spec)


def normalize(spec: str) -> str:
    """A spec as a run records it: a path made absolute (against the current directory), a module name as it is."""
    spec = str(spec).strip()
    return os.path.abspath(os.path.expanduser(spec)) if is_path_spec(spec) else spec


def as_list(value: Any, where: str = "include") -> list[str]:
    """The specs of one config layer's ``include`` value: ``None``, a string or a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [v for v in value if v.strip()]
    raise PluginError(f"{where}: include must be a module name, a path or a list of them, got {value!r}")


def merge(*groups: Iterable[str]) -> list[str]:
    """The specs of every group, normalized (:func:`normalize`), in order, each once."""
    out: list[str] = []
    for group in groups:
        for spec in group:
            spec = normalize(spec)
            if spec and spec not in out:
                out.append(spec)
    return out


def env_specs(environ: dict[str, str] | None = None) -> list[str]:
    """The specs of ``$SDFT_INCLUDE`` (separated by ``os.pathsep``), normalized."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return merge(part for part in value.split(os.pathsep) if part.strip())


def recorded(run_dir: str | Path | None) -> list[str]:
    """The specs a run directory recorded (``include`` of its ``config.yaml``); ``[]`` when it has none."""
    import yaml

    path = Path(run_dir) / "config.yaml" if run_dir else None
    if path is None or not path.is_file():
        return []
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise PluginError(f"{path}: not valid YAML ({type(err).__name__}); its recorded plugins cannot be read") from err
    return as_list(config.get("include") if isinstance(config, dict) else None, str(path))


def import_plugins(specs: Iterable[str]) -> list[str]:
    """Import every spec (module names, ``.py`` files, directories); return the names of the modules imported.

    Raises :class:`PluginError` naming the spec when it names nothing importable or its import fails."""
    names: list[str] = []
    for spec in specs:
        spec = str(spec).strip()
        if not spec:
            continue
        if is_path_spec(spec):
            names.extend(_import_path(spec))
        else:
            names.append(_import_module(spec))
    return names


def import_env_plugins() -> list[str]:
    """Import the specs of ``$SDFT_INCLUDE`` (what the registries do on their first look-up)."""
    return import_plugins(env_specs())


def _import_module(spec: str) -> str:
    if not all(part.isidentifier() for part in spec.split(".")):
        raise PluginError(f"{spec}: no such file or directory, and not a module name (--include takes a dotted "
                          "module name, a .py file or a directory)")
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as err:
        if err.name is not None and (spec == err.name or spec.startswith(err.name + ".")):
            raise PluginError(f"{spec}: no module of that name on sys.path (cwd {os.getcwd()}); give a path to "
                              "its .py file, or add its folder to PYTHONPATH") from err
        raise PluginError(f"{spec}: import failed: {type(err).__name__}: {err}") from err
    except Exception as err:
        raise PluginError(f"{spec}: import failed: {type(err).__name__}: {err}") from err
    return spec


def _import_path(spec: str) -> list[str]:
    path = Path(spec).expanduser()
    if not path.exists():
        raise PluginError(f"{spec}: no such file or directory (cwd {os.getcwd()})")
    if path.is_dir():
        files = sorted(p for p in path.glob("*.py") if p.is_file())
        if not files:
            raise PluginError(f"{spec}: a directory without .py files")
        return [_import_file(p, spec) for p in files]
    if path.suffix != ".py":
        raise PluginError(f"{spec}: not a .py file or a directory")
    return [_import_file(path, spec)]


def module_name(path: str | Path) -> str:
    """The name a plugin file is imported under: its stem and a hash of its absolute path (two files of one name
    do not collide, and one file is imported once)."""
    resolved = Path(path).resolve()
    stem = "".join(c if c.isalnum() else "_" for c in resolved.stem)
    return f"sdft_plugin_{stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"


def _import_file(path: Path, spec: str) -> str:
    name = module_name(path)
    if name in sys.modules:
        return name
    where = spec if Path(spec).expanduser().resolve() == path.resolve() else f"{spec}: {path.name}"
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise PluginError(f"{where}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # before running it: dataclasses and typing look their module up there
    try:
        loader_spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise PluginError(f"{where}: import failed: {type(err).__name__}: {err}") from err
    return name


# ------------------------------------------------------------------------------------------------ registries
class UnknownName(UserError, KeyError):
    """A name no registry entry has; its message (not quoted, unlike a ``KeyError``'s) names it, the known names and
    how to add one of your own."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(dict):
    """Name -> entry (an ``sdft.method.Method`` or a ``data_prep.task.Task``), filled by :meth:`register`.

    ``builtins``: the repository's own entries, registered at once, or a function returning them, called on the
    first look-up (for entries whose modules are slow to import: the methods import torch and TRL); they are
    listed before the entries registered earlier. The plugins of ``$SDFT_INCLUDE`` are imported on the first
    look-up."""

    def __init__(self, kind: str, builtins: Iterable[Any] | Callable[[], Iterable[Any]]):
        super().__init__()
        self.kind, self._loaded = kind, False
        self._builtins = builtins if callable(builtins) else None
        for entry in [] if callable(builtins) else builtins:
            self.register(entry)

    def register(self, entry, replace: bool = False):
        """Add ``entry`` under ``entry.name``; another entry under a registered name is an error unless ``replace``."""
        if entry.name in self and not replace and self[entry.name] != entry:
            raise ValueError(f"{self.kind} {entry.name!r} is registered already")
        self[entry.name] = entry
        return entry

    def lookup(self, name: str):
        """The entry registered under ``name``; :class:`UnknownName` naming the known ones when there is none."""
        self.load_builtins()
        if name not in self:
            raise UnknownName(f"unknown {self.kind} {name!r}; known {self.kind}s: {sorted(self)}; a {self.kind} of "
                              f"your own: {HINT}")
        return self[name]

    def names(self) -> list[str]:
        """Every registered name, the repository's own and the plugins' alike."""
        self.load_builtins()
        return list(self)

    def load_builtins(self) -> None:
        """Once: the repository's own entries, if they come from a function, then the plugins of
        ``$SDFT_INCLUDE``."""
        if not self._loaded:
            self._loaded = True
            if self._builtins is not None:
                registered = list(self.values())
                self.clear()
                for entry in [*self._builtins(), *registered]:
                    self.register(entry)
            import_env_plugins()
