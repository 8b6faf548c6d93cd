"""chatwire uses other libraries through their public interfaces only: no `x._name` in chatwire/ may reach an
underscore attribute of another library's object, module or class.

An AST walk over every module of the package: an access `obj._name` (dunders aside) is allowed only when `_name` is
one chatwire itself defines (a function, method, class attribute, slot or `self._name =` assignment anywhere in
the package). And a chatwire class that derives from another library's class may neither define nor use an
underscore name that one of those foreign bases has (that would be overriding or reading its internals); that
part imports the class and reads its foreign bases' attributes.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import chatwire

PACKAGE = Path(chatwire.__file__).parent


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        yield name, ast.parse(path.read_text(), str(path))


def own_private_names(trees: list[tuple[str, ast.Module]]) -> set[str]:
    """Every underscore name chatwire defines somewhere (so an access to it is an access to chatwire's own)."""
    names: set[str] = set()
    for _module, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and private(node.name):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and private(node.attr):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and private(node.id):
                names.add(node.id)
            elif (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and private(node.target.id)
            ):
                names.add(node.target.id)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and private(node.value):
                names.add(node.value)  # __slots__ entries
    return names


def resolve(expr: ast.expr, namespace: dict[str, object]) -> object:
    """A base class expression (`Name` or `module.Name`) looked up in its module's namespace; None if unknown."""
    if isinstance(expr, ast.Name):
        return namespace.get(expr.id)
    if isinstance(expr, ast.Attribute):
        owner = resolve(expr.value, namespace)
        return getattr(owner, expr.attr, None)
    return None


def test_no_access_to_another_librarys_underscore_attribute() -> None:
    trees = list(modules())
    own = own_private_names(trees)
    offenders = [
        f"{module}:{node.lineno}: .{node.attr}"
        for module, tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in own
    ]
    assert offenders == []


def test_no_underscore_name_of_a_foreign_base_class_is_defined_or_used() -> None:
    offenders: list[str] = []
    for module, tree in modules():
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            if not cls.bases:
                continue
            namespace = vars(importlib.import_module(module))
            bases = [resolve(b, namespace) for b in cls.bases]
            foreign = [
                k
                for base in bases
                if isinstance(base, type)
                for k in base.__mro__
                if not k.__module__.startswith("chatwire") and k is not object
            ]
            used = {
                n.attr if isinstance(n, ast.Attribute) else n.name
                for n in ast.walk(cls)
                if (isinstance(n, ast.Attribute) and private(n.attr))
                or (isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and private(n.name))
            }
            offenders += [
                f"{module}.{cls.name}: {name} (of {base.__module__}.{base.__qualname__})"
                for name in sorted(used)
                for base in foreign
                if name in vars(base)
            ]
    assert offenders == []


def test_the_check_finds_what_it_is_for() -> None:
    """The walk itself: a foreign private access is reported, one of chatwire's own names is not."""
    tree = ast.parse("import asyncio\nasyncio.get_running_loop()._ready\nself._mine = 1\nself._mine\n")
    own = own_private_names([("x", tree)])
    found = [
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and private(n.attr) and n.attr not in own
    ]
    assert found == ["_ready"]
