#!/usr/bin/env python3
"""List the long command-line flags that `vllm serve` accepts, read from vLLM's source.

Usage:
    python3 scripts/vllm-flags.py SRC [--header] [--explain]

SRC is an unpacked vLLM wheel or checkout: the directory that holds `vllm/`.
Nothing is imported: the script parses the Python files with `ast`.

Regenerating the stand-in's allow-lists (modelctl/standin/flags-<version>.txt), e.g. for 0.33.0:

    pip download --no-deps -d /tmp/whl vllm==0.33.0
    unzip -q /tmp/whl/vllm-0.33.0-*.whl 'vllm/*' 'vllm-0.33.0.dist-info/*' -d /tmp/src-0.33.0
    python3 scripts/vllm-flags.py --header /tmp/src-0.33.0 > modelctl/standin/flags-0.33.0.txt
    bash scripts/build-standin.sh   # the lists are baked into the image

(the wheel is large; only its .py files are read, and the dist-info directory names the version).
A new version also needs its log texts: modelctl/standin/texts-<version>.sh.

The script follows what `vllm serve` does when it builds its parser:

  vllm/entrypoints/cli/serve.py  ServeSubcommand.subparser_init
    -> make_arg_parser (imported module)   explicit add_argument calls
    -> <Frontend>Args.add_cli_args         one --kebab-case flag per dataclass field
       (with the overrides of <Frontend>Args._customize_cli_kwargs, newer vLLM)
    -> AsyncEngineArgs.add_cli_args        explicit add_argument calls
    -> EngineArgs.add_cli_args             add_argument("--x", **<cfg>_kwargs["field"])

A flag gets its negative forms when argparse gives it a BooleanOptionalAction:
explicitly (`action=argparse.BooleanOptionalAction`) or through vLLM's
`get_kwargs`, which does so for every config field whose type contains `bool`
(but not for `bool | str | None` in newer vLLM, nor when a dataclass type is in
the union). Python's BooleanOptionalAction adds `--no-X` for each `--X`. Newer
vLLM (`FlexibleArgumentParser` registers `EnableDisableAction` in place of
`BooleanOptionalAction`) also accepts `--disable-X` for `--enable-X` and the
reverse; this script detects that from vllm/utils/argparse_utils.py.

Printed: every accepted long flag and what follows it, one per line, sorted
(`--help` included, short options such as -q and -tp left out):

    --flag KIND

KIND is `switch` (no value: store_true/false, BooleanOptionalAction and its
--no-/--enable-/--disable- forms), `value` (one value), `optional` (nargs="?":
a value may follow) or `list` (nargs="+": one or more values). argparse also
accepts unambiguous prefixes of these (allow_abbrev is left at True) and vLLM
turns `_` into `-` in flag names before parsing; neither is expanded here.
Plugins (`load_general_plugins`, `current_platform.pre_register_and_update`)
can add flags at run time; those are not visible in the source.

--header prints a first comment line saying how the list was generated.
--explain adds, for each flag, where it comes from (file:line).
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ClassInfo:
    name: str
    path: Path
    node: ast.ClassDef
    module_aliases: dict[str, ast.expr]


@dataclass
class Flag:
    names: list[str]
    boolean: bool
    where: str
    kind: str = "value"  # what follows the flag: see KINDS


@dataclass
class Index:
    root: Path
    classes: dict[str, list[ClassInfo]] = field(default_factory=dict)
    modules: dict[Path, ast.Module] = field(default_factory=dict)
    # _compute_kwargs gives `bool | str | None` fields nargs="?" (newer vLLM) instead of a
    # BooleanOptionalAction (0.11)
    optional_valued: bool = False

    def load(self) -> None:
        arg_utils = self.root / "vllm" / "engine" / "arg_utils.py"
        if arg_utils.exists():
            self.optional_valued = "type_hints == {bool, str, type(None)}" in arg_utils.read_text(encoding="utf-8")
        for path in sorted((self.root / "vllm").rglob("*.py")):
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            # only files that can define config dataclasses, type aliases used
            # by them, or parser-building code (keeps the parse to seconds)
            if not any(k in text for k in ("dataclass", "@config", "add_argument", "add_cli_args", "TypeAlias")):
                continue
            try:
                tree = ast.parse(text, filename=str(path))
            except SyntaxError:
                continue
            self.modules[path] = tree
            aliases: dict[str, ast.expr] = {}
            for stmt in tree.body:
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                    tgt = stmt.targets[0]
                    if isinstance(tgt, ast.Name):
                        aliases[tgt.id] = stmt.value
                elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    ann = ast.unparse(stmt.annotation)
                    if "TypeAlias" in ann and stmt.value is not None:
                        aliases[stmt.target.id] = stmt.value
                elif type(stmt).__name__ == "TypeAlias":  # py3.12 `type X = ...`
                    aliases[stmt.name.id] = stmt.value  # type: ignore[attr-defined]
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    self.classes.setdefault(node.name, []).append(ClassInfo(node.name, path, node, aliases))

    def module(self, path: Path) -> ast.Module:
        if path not in self.modules:
            self.modules[path] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        return self.modules[path]

    def cls(self, name: str, prefer: str = "") -> ClassInfo | None:
        cands = self.classes.get(name, [])
        if not cands:
            return None
        for c in cands:
            if prefer and prefer in str(c.path):
                return c
        # prefer vllm/config/ and vllm/engine/, then vllm/entrypoints/
        for key in ("/vllm/config/", "/vllm/engine/", "/vllm/entrypoints/"):
            for c in cands:
                if key in str(c.path):
                    return c
        return cands[0]

    def rel(self, path: Path, line: int) -> str:
        return f"{path.relative_to(self.root)}:{line}"

    def is_dataclass_name(self, name: str) -> bool:
        info = self.cls(name)
        if info is None:
            return False
        for dec in info.node.decorator_list:
            text = ast.unparse(dec)
            if "dataclass" in text or text in ("config",) or text.startswith("config("):
                return True
        # subclasses of config dataclasses
        for base in info.node.bases:
            bname = ast.unparse(base).split(".")[-1]
            if bname != name and self.is_dataclass_name(bname):
                return True
        return False

    def fields(self, name: str, seen: set[str] | None = None) -> list[tuple[str, ast.expr, ClassInfo]]:
        """Dataclass fields of a class, bases first (dataclass order)."""
        seen = seen or set()
        if name in seen:
            return []
        seen.add(name)
        info = self.cls(name)
        if info is None:
            return []
        out: list[tuple[str, ast.expr, ClassInfo]] = []
        for base in info.node.bases:
            bname = ast.unparse(base).split(".")[-1]
            if self.cls(bname) is not None:
                for f in self.fields(bname, seen):
                    out = [o for o in out if o[0] != f[0]] + [f]
        for stmt in info.node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                ann = ast.unparse(stmt.annotation)
                if ann.startswith("ClassVar") or ".ClassVar" in ann or ann.startswith("InitVar"):
                    continue
                out = [o for o in out if o[0] != stmt.target.id]
                out.append((stmt.target.id, stmt.annotation, info))
        return out

    def field_type(self, cls_name: str, fname: str) -> tuple[ast.expr, ClassInfo] | None:
        for n, ann, info in self.fields(cls_name):
            if n == fname:
                return ann, info
        return None


def union_members(expr: ast.expr, aliases: dict[str, ast.expr], depth: int = 0) -> list[str]:
    """Flatten a type annotation into the names of its union members."""
    if depth > 8:
        return []
    if isinstance(expr, ast.Constant):
        if expr.value is None:
            return ["None"]
        if isinstance(expr.value, str):  # forward reference
            try:
                return union_members(ast.parse(expr.value, mode="eval").body, aliases, depth + 1)
            except SyntaxError:
                return [expr.value]
        return [repr(expr.value)]
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.BitOr):
        return union_members(expr.left, aliases, depth + 1) + union_members(expr.right, aliases, depth + 1)
    if isinstance(expr, ast.Subscript):
        head = ast.unparse(expr.value).split(".")[-1]
        inner = expr.slice
        if head == "Optional":
            return union_members(inner, aliases, depth + 1) + ["None"]
        if head == "Union":
            elts = inner.elts if isinstance(inner, ast.Tuple) else [inner]
            out: list[str] = []
            for e in elts:
                out += union_members(e, aliases, depth + 1)
            return out
        if head == "Annotated":
            first = inner.elts[0] if isinstance(inner, ast.Tuple) else inner
            return union_members(first, aliases, depth + 1)
        return [head]  # list[...], dict[...], Literal[...]
    if isinstance(expr, (ast.Name, ast.Attribute)):
        name = ast.unparse(expr).split(".")[-1]
        if name in aliases and depth < 8:
            alias_val = aliases[name]
            if isinstance(alias_val, (ast.BinOp, ast.Subscript, ast.Name, ast.Attribute)):
                return union_members(alias_val, aliases, depth + 1)
        return [name]
    return [ast.unparse(expr)]


COLLECTIONS = {"list", "List", "set", "Set", "tuple", "Tuple", "Sequence"}


def kind_from_annotation(index: Index, ann: ast.expr, info: ClassInfo) -> str:
    """Mirror of the rest of _compute_kwargs: how many values the field's flag takes."""
    members = union_members(ann, info.module_aliases)
    if any(index.is_dataclass_name(m) for m in members if m not in ("bool", "str", "None")):
        return "value"  # JSON
    if set(members) == {"bool", "str", "None"}:
        return "optional" if index.optional_valued else "switch"
    if "bool" in members:
        return "switch"
    if "Literal" in members:
        return "value"
    if any(m in COLLECTIONS for m in members):
        return "list"  # collection_to_kwargs: nargs="+"
    return "value"


def kind_from_keywords(keywords: dict[str, ast.expr], default: str) -> str:
    """The kind an explicit add_argument(..., action=, nargs=) gives."""
    kind = default
    action = keywords.get("action")
    if action is not None:
        text = ast.unparse(action)
        if text.endswith("BooleanOptionalAction") or text.strip("'\"") in SWITCH_ACTIONS:
            kind = "switch"
        elif kind == "switch":
            kind = "value"
    nargs = keywords.get("nargs")
    if isinstance(nargs, ast.Constant):
        if nargs.value == "?":
            kind = "optional"
        elif nargs.value in ("+", "*") or (isinstance(nargs.value, int) and nargs.value > 1):
            kind = "list"
        elif nargs.value == 0:
            kind = "switch"
    return kind


SWITCH_ACTIONS = {"store_true", "store_false", "store_const", "append_const", "count", "help", "version"}


def boolean_from_annotation(index: Index, ann: ast.expr, info: ClassInfo) -> bool:
    """Mirror of vllm.engine.arg_utils._compute_kwargs: does the field get a
    BooleanOptionalAction?"""
    members = union_members(ann, info.module_aliases)
    if any(index.is_dataclass_name(m) for m in members if m not in ("bool", "str", "None")):
        return False  # dataclass branch comes first
    if set(members) == {"bool", "str", "None"} and index.optional_valued:
        return False  # optional-valued flag (nargs="?")
    return "bool" in members


class Walker:
    """Follow one parser-building function, collecting add_argument calls."""

    def __init__(self, index: Index):
        self.index = index
        self.flags: list[Flag] = []
        self.visited: set[tuple[str, str]] = set()

    # --- entry points -------------------------------------------------------
    def run(self) -> list[Flag]:
        serve = self.index.root / "vllm" / "entrypoints" / "cli" / "serve.py"
        tree = self.index.module(serve)
        imports = self._imports(tree)
        sub = self._find_method(tree, "ServeSubcommand", "subparser_init")
        if sub is None:
            raise SystemExit(f"{serve}: ServeSubcommand.subparser_init not found")
        self.walk_function(sub, serve, imports, current_cls=None)
        return self.flags

    def _imports(self, tree: ast.Module) -> dict[str, str]:
        out = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                for a in node.names:
                    out[a.asname or a.name] = node.module
        return out

    def _module_path(self, module: str) -> Path | None:
        p = self.index.root / Path(*module.split("."))
        if (p.with_suffix(".py")).exists():
            return p.with_suffix(".py")
        if (p / "__init__.py").exists():
            return p / "__init__.py"
        return None

    @staticmethod
    def _find_method(tree: ast.AST, cls: str | None, name: str):
        for node in ast.walk(tree):
            if cls is None and isinstance(node, ast.Module):
                for stmt in node.body:
                    if isinstance(stmt, ast.FunctionDef) and stmt.name == name:
                        return stmt
            if isinstance(node, ast.ClassDef) and node.name == cls:
                for stmt in node.body:
                    if isinstance(stmt, ast.FunctionDef) and stmt.name == name:
                        return stmt
        return None

    def _method_of_class(self, cls_name: str, method: str):
        """Find `method` on class `cls_name` or its bases."""
        info = self.index.cls(cls_name)
        while info is not None:
            for stmt in info.node.body:
                if isinstance(stmt, ast.FunctionDef) and stmt.name == method:
                    return stmt, info
            nxt = None
            for base in info.node.bases:
                bname = ast.unparse(base).split(".")[-1]
                if self.index.cls(bname) is not None:
                    nxt = self.index.cls(bname)
                    break
            info = nxt
        return None, None

    # --- the walk -----------------------------------------------------------
    def walk_function(self, fn: ast.FunctionDef, path: Path, imports: dict[str, str], current_cls: str | None) -> None:
        key = (str(path), f"{current_cls}.{fn.name}:{fn.lineno}")
        if key in self.visited:
            return
        self.visited.add(key)
        env: dict[str, tuple] = {}
        self._walk_body(fn.body, path, imports, current_cls, env, loops={})

    def _walk_body(self, body, path, imports, current_cls, env, loops) -> None:
        for stmt in body:
            self._walk_stmt(stmt, path, imports, current_cls, env, loops)

    def _kwargs_of(self, expr: ast.expr, current_cls, env):
        """Return ('kwargs', Cls) / ('field', Cls, name) / None for an expression."""
        if isinstance(expr, ast.Call):
            fname = ast.unparse(expr.func).split(".")[-1]
            if fname == "get_kwargs" and expr.args:
                arg = ast.unparse(expr.args[0])
                cls_name = current_cls if arg == "cls" else arg.split(".")[-1]
                return ("kwargs", cls_name)
            if fname == "_customize_cli_kwargs" and expr.args:
                return self._kwargs_of(expr.args[0], current_cls, env)
            if fname in ("deepcopy", "copy", "dict") and expr.args:
                return self._kwargs_of(expr.args[0], current_cls, env)
            return None
        if isinstance(expr, ast.Name):
            return env.get(expr.id)
        if isinstance(expr, ast.Subscript) and isinstance(expr.slice, ast.Constant):
            base = self._kwargs_of(expr.value, current_cls, env)
            if base and base[0] == "kwargs":
                return ("field", base[1], expr.slice.value)
        return None

    def _customize(self, cls_name: str, kw: tuple, env: dict) -> None:
        """Read the overrides a `_customize_cli_kwargs(cls, kwargs)` classmethod (and the
        `super()` ones it calls) makes to kwargs's fields into env."""
        fn, info = self._method_of_class(cls_name, "_customize_cli_kwargs")
        if fn is None or len(fn.args.args) < 2:
            return
        sub_env: dict = {fn.args.args[1].arg: kw}
        for stmt in fn.body:
            value = stmt.value if isinstance(stmt, ast.Assign) else None
            if (
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Attribute)
                and value.func.attr == "_customize_cli_kwargs"
                and ast.unparse(value.func.value) == "super()"
            ):
                for base in info.node.bases:
                    bname = ast.unparse(base).split(".")[-1]
                    if self.index.cls(bname) is not None:
                        self._customize(bname, kw, sub_env)
                        break
                continue
            self._walk_stmt(stmt, info.path, {}, info.name, sub_env, {})
        env.update({k: v for k, v in sub_env.items() if isinstance(k, tuple)})

    def _walk_stmt(self, stmt, path, imports, current_cls, env, loops) -> None:
        if isinstance(stmt, ast.Assign):
            kw = self._kwargs_of(stmt.value, current_cls, env)
            value = stmt.value
            if (
                kw is not None
                and kw[0] == "kwargs"
                and isinstance(value, ast.Call)
                and isinstance(value.func, ast.Attribute)
                and value.func.attr == "_customize_cli_kwargs"
                and ast.unparse(value.func.value) == "cls"
                and current_cls
            ):
                self._customize(current_cls, kw, env)
            for tgt in stmt.targets:
                if isinstance(tgt, ast.Name):
                    if kw is not None:
                        env[tgt.id] = kw
                    else:
                        env.pop(tgt.id, None)
                # X["f"]["action"] = ... overrides the action of a field
                if (
                    isinstance(tgt, ast.Subscript)
                    and isinstance(tgt.slice, ast.Constant)
                    and tgt.slice.value == "action"
                ):
                    owner = self._kwargs_of(tgt.value, current_cls, env)
                    if owner and owner[0] == "field":
                        env[("action",) + owner[1:]] = (
                            "bool" if ast.unparse(stmt.value).endswith("BooleanOptionalAction") else "other",
                        )
        if isinstance(stmt, ast.Delete):
            for tgt in stmt.targets:
                if isinstance(tgt, ast.Subscript) and isinstance(tgt.slice, ast.Constant):
                    owner = self._kwargs_of(tgt.value, current_cls, env)
                    if owner and owner[0] == "field" and tgt.slice.value == "action":
                        env[("action",) + owner[1:]] = ("other",)
                    # del X["f"]["nargs"]: one value after all
                    if owner and owner[0] == "field" and tgt.slice.value == "nargs":
                        env[("nargs",) + owner[1:]] = ("one",)
        if isinstance(stmt, ast.For):
            new_loops = dict(loops)
            it = stmt.iter
            # for key, value in X.items():
            if isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute) and it.func.attr == "items":
                owner = self._kwargs_of(it.func.value, current_cls, env)
                if owner and owner[0] == "kwargs" and isinstance(stmt.target, ast.Tuple):
                    k = stmt.target.elts[0]
                    v = stmt.target.elts[1]
                    if isinstance(k, ast.Name):
                        new_loops[k.id] = ("fields", owner[1], v.id if isinstance(v, ast.Name) else None)
            # for arg, type in [("--a", str), ...]:  /  for arg in ["--a", ...]:
            elif isinstance(it, (ast.List, ast.Tuple)):
                vals = []
                for e in it.elts:
                    first = e.elts[0] if isinstance(e, ast.Tuple) else e
                    if isinstance(first, ast.Constant) and isinstance(first.value, str):
                        vals.append(first.value)
                tname = stmt.target.elts[0] if isinstance(stmt.target, ast.Tuple) else stmt.target
                if vals and isinstance(tname, ast.Name):
                    new_loops[tname.id] = ("literals", vals)
            self._walk_body(stmt.body, path, imports, current_cls, env, new_loops)
            self._walk_body(stmt.orelse, path, imports, current_cls, env, loops)
            return
        if isinstance(stmt, (ast.If, ast.With, ast.Try)):
            # every branch: flags added conditionally are still flags of some run
            for attr in ("body", "orelse", "finalbody"):
                self._walk_body(getattr(stmt, attr, []) or [], path, imports, current_cls, env, loops)
            for h in getattr(stmt, "handlers", []) or []:
                self._walk_body(h.body, path, imports, current_cls, env, loops)
            return
        # calls anywhere in the statement
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call):
                self._call(node, path, imports, current_cls, env, loops)

    def _call(self, call: ast.Call, path, imports, current_cls, env, loops) -> None:
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr == "add_argument":
            self._add_argument(call, path, current_cls, env, loops)
            return
        # X.add_cli_args(parser)  /  make_arg_parser(parser)
        if isinstance(func, ast.Attribute) and func.attr == "add_cli_args":
            owner = ast.unparse(func.value)
            cls_name = current_cls if owner in ("cls", "self") else owner.split(".")[-1]
            if owner == "super()":
                return
            fn, info = self._method_of_class(cls_name, "add_cli_args")
            if fn is not None:
                self.walk_function(fn, info.path, self._imports(self.index.module(info.path)), cls_name)
            return
        if isinstance(func, ast.Name) and func.id == "make_arg_parser":
            module = imports.get("make_arg_parser")
            mpath = self._module_path(module) if module else path
            if mpath is None:
                return
            tree = self.index.module(mpath)
            fn = self._find_method(tree, None, "make_arg_parser")
            if fn is not None:
                self.walk_function(fn, mpath, self._imports(tree), None)

    def _field_kind(self, cls_name: str, fname: str, env) -> str:
        """What follows the flag of a config field, with the overrides seen in the walk."""
        ft = self.index.field_type(cls_name, fname)
        kind = kind_from_annotation(self.index, ft[0], ft[1]) if ft is not None else "value"
        ovr = env.get(("action", cls_name, fname))
        if ovr is not None:
            kind = "switch" if ovr[0] == "bool" else ("value" if kind == "switch" else kind)
        if env.get(("nargs", cls_name, fname)) is not None and kind == "list":
            kind = "value"
        return kind

    def _add_argument(self, call: ast.Call, path, current_cls, env, loops) -> None:
        names: list[str] = []
        per_field: list[tuple[str, bool | None, str | None]] = []  # for loops over dataclass fields
        field_kind = "value"
        for a in call.args:
            if isinstance(a, ast.Constant) and isinstance(a.value, str):
                if a.value.startswith("--"):
                    names.append(a.value)
            elif isinstance(a, ast.Name) and a.id in loops and loops[a.id][0] == "literals":
                for v in loops[a.id][1]:
                    if v.startswith("--"):
                        per_field.append((v, None, None))
            elif isinstance(a, ast.JoinedStr):
                loopvars = [n.id for n in ast.walk(a) if isinstance(n, ast.Name) and n.id in loops]
                for lv in loopvars:
                    loop = loops[lv]
                    if loop[0] == "fields":
                        for fname, ann, info in self.index.fields(loop[1]):
                            ovr = env.get(("action", loop[1], fname))
                            if ovr is not None:
                                boolean = ovr[0] == "bool"
                            else:
                                boolean = boolean_from_annotation(self.index, ann, info)
                            kind = self._field_kind(loop[1], fname, env)
                            per_field.append(("--" + fname.replace("_", "-"), boolean, kind))
        boolean = False
        explicit: dict[str, ast.expr] = {}  # action= / nargs= given here, over the field's
        for kw in call.keywords:
            if kw.arg in ("action", "nargs"):
                explicit[kw.arg] = kw.value
                if kw.arg == "action":
                    boolean = ast.unparse(kw.value).endswith("BooleanOptionalAction")
            elif kw.arg is None and isinstance(kw.value, ast.Dict):  # **{**X["f"], ...}
                for k, v in zip(kw.value.keys, kw.value.values):
                    if k is None:
                        owner = self._kwargs_of(v, current_cls, env)
                        if owner and owner[0] == "field":
                            ft = self.index.field_type(owner[1], owner[2])
                            ovr = env.get(("action",) + owner[1:])
                            if ovr is not None:
                                boolean = ovr[0] == "bool"
                            elif ft is not None:
                                boolean = boolean_from_annotation(self.index, ft[0], ft[1])
                            field_kind = self._field_kind(owner[1], owner[2], env)
                    elif isinstance(k, ast.Constant) and k.value in ("action", "nargs"):
                        explicit[k.value] = v
                        if k.value == "action":
                            boolean = ast.unparse(v).endswith("BooleanOptionalAction")
            elif kw.arg is None:  # **kwargs
                owner = self._kwargs_of(kw.value, current_cls, env)
                if owner and owner[0] == "field":
                    ovr = env.get(("action",) + owner[1:])
                    if ovr is not None:
                        boolean = ovr[0] == "bool"
                    else:
                        ft = self.index.field_type(owner[1], owner[2])
                        if ft is not None:
                            boolean = boolean_from_annotation(self.index, ft[0], ft[1])
                    field_kind = self._field_kind(owner[1], owner[2], env)
        where = self.index.rel(path, call.lineno)
        if names:
            self.flags.append(Flag(names, boolean, where, kind_from_keywords(explicit, field_kind)))
        for name, b, k in per_field:
            self.flags.append(
                Flag([name], boolean if b is None else b, where, k or kind_from_keywords(explicit, "value"))
            )


def enable_disable_pairs(root: Path) -> bool:
    """True when FlexibleArgumentParser maps BooleanOptionalAction to
    EnableDisableAction (--enable-x <-> --disable-x)."""
    p = root / "vllm" / "utils" / "argparse_utils.py"
    if not p.exists():
        return False
    tree = ast.parse(p.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "register"
            and len(node.args) == 3
            and ast.unparse(node.args[1]).endswith("BooleanOptionalAction")
            and ast.unparse(node.args[2]).endswith("EnableDisableAction")
        ):
            return True
    return False


def accepted(flags: list[Flag], enable_disable: bool) -> dict[str, tuple[str, str]]:
    """Every accepted long flag -> (kind, where it comes from)."""
    out: dict[str, tuple[str, str]] = {"--help": ("switch", "argparse (add_help=True)")}
    for f in flags:
        kind = "switch" if f.boolean else f.kind
        for n in f.names:
            out.setdefault(n, (kind, f.where))
            if f.boolean:
                out.setdefault("--no-" + n[2:], ("switch", f.where + " (BooleanOptionalAction)"))
                if enable_disable:
                    for pre, inv in (("--enable-", "--disable-"), ("--disable-", "--enable-")):
                        if n.startswith(pre):
                            out.setdefault(inv + n[len(pre) :], ("switch", f.where + " (EnableDisableAction)"))
    return out


def version_of(root: Path) -> str:
    for cand in sorted(root.glob("vllm-*.dist-info")):
        return cand.name[len("vllm-") : -len(".dist-info")]
    vf = root / "vllm" / "_version.py"
    if vf.exists():
        for line in vf.read_text().splitlines():
            if line.startswith(("__version__", "version")) and "=" in line:
                return line.split("=", 1)[1].strip().strip("'\"")
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="directory that contains vllm/")
    ap.add_argument("--header", action="store_true", help="print a generated-by comment first")
    ap.add_argument("--explain", action="store_true", help="print where each flag comes from")
    args = ap.parse_args(argv)
    root: Path = args.src.resolve()
    if not (root / "vllm" / "entrypoints" / "cli" / "serve.py").exists():
        print(f"{root}: no vllm/entrypoints/cli/serve.py", file=sys.stderr)
        return 2
    index = Index(root)
    index.load()
    flags = Walker(index).run()
    ed = enable_disable_pairs(root)
    table = accepted(flags, ed)
    if args.header:
        print(
            f"# vllm serve long flags, vLLM {version_of(root)}: generated by "
            f"scripts/vllm-flags.py from the wheel's source (no import); "
            f"booleans add --no-X{' and --enable-X/--disable-X pairs' if ed else ''}; "
            f"each line: --flag switch|value|optional|list"
        )
    for name in sorted(table):
        kind, where = table[name]
        print(f"{name} {kind}\t{where}" if args.explain else f"{name} {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
