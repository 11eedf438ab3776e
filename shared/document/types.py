"""Dioptra's static type system: built-in simple types, user types, structures, unions.

Types only check what can be known before a run: parameter defaults and task arguments
whose types can be inferred (literals, parameters, declared step outputs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class Type:
    name: str | None

    def __str__(self) -> str:
        return self.name or self.describe()

    def describe(self) -> str:
        return self.name or "?"


@dataclass(eq=False)
class SimpleType(Type):
    name: str | None
    super_type: SimpleType | None = None

    def is_subtype_of(self, other: SimpleType) -> bool:
        current: SimpleType | None = self
        while current is not None:
            if current is other:
                return True
            current = current.super_type
        return False


@dataclass(eq=False)
class StructuredType(Type):
    kind: str  # "list" | "tuple" | "mapping"
    definition: Any
    """list: element Type; tuple: list of Types; mapping: (key, value) tuple or {field: Type}."""
    name: str | None = None

    def _key(self) -> tuple[Any, ...]:
        definition = self.definition
        if isinstance(definition, dict):
            definition = tuple(sorted(definition.items(), key=lambda item: (type(item[0]).__name__, str(item[0]))))
        elif isinstance(definition, list):
            definition = tuple(definition)
        return (self.name, self.kind, definition)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, StructuredType) or self.name or other.name:
            return False
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.kind, self.name))

    def describe(self) -> str:
        if self.kind == "list":
            inner = str(self.definition)
        elif self.kind == "tuple":
            inner = ", ".join(str(t) for t in self.definition)
        elif isinstance(self.definition, dict):
            inner = ", ".join(f"{k}: {v}" for k, v in self.definition.items())
            inner = "{" + inner + "}"
        else:
            inner = f"{self.definition[0]}, {self.definition[1]}"
        return f"{self.kind}[{inner}]"


@dataclass(eq=False)
class UnionType(Type):
    members: tuple[Type, ...] = ()
    name: str | None = None

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, UnionType) or self.name or other.name:
            return False
        return set(map(_identity, self.members)) == set(map(_identity, other.members))

    def __hash__(self) -> int:
        return hash(("union", self.name))

    def describe(self) -> str:
        return "union[" + ", ".join(str(m) for m in self.members) + "]"


def _identity(t: Type) -> Any:
    return t if isinstance(t, SimpleType) else (type(t).__name__, str(t))


ANY = SimpleType("any")
NUMBER = SimpleType("number")
INTEGER = SimpleType("integer", NUMBER)
STRING = SimpleType("string")
BOOLEAN = SimpleType("boolean")
NULL = SimpleType("null")
BUILTIN_TYPES: dict[str, Type] = {
    t.name: t for t in (ANY, NUMBER, INTEGER, STRING, BOOLEAN, NULL) if t.name
}


def referenced_type_names(type_def: Any) -> Iterator[str]:
    """Every type name a definition mentions (for undefined-name and cycle checks)."""
    if isinstance(type_def, str):
        yield type_def
    elif isinstance(type_def, dict):
        if "is_a" in type_def:
            yield from referenced_type_names(type_def["is_a"])
        for key in ("list",):
            if key in type_def:
                yield from referenced_type_names(type_def[key])
        for key in ("tuple", "union"):
            if isinstance(type_def.get(key), list):
                for member in type_def[key]:
                    yield from referenced_type_names(member)
        mapping = type_def.get("mapping")
        if isinstance(mapping, list):
            for member in mapping:
                yield from referenced_type_names(member)
        elif isinstance(mapping, dict):
            for member in mapping.values():
                yield from referenced_type_names(member)


@dataclass
class TypeRegistry:
    """Built-ins plus the document's ``types:``; assumes definitions were checked first."""

    definitions: Mapping[str, Any]
    types: dict[str, Type] = field(default_factory=lambda: dict(BUILTIN_TYPES))

    def __post_init__(self) -> None:
        for name in self.definitions:
            self.get(name)

    def get(self, name: str) -> Type:
        found = self.types.get(name)
        if found is None:
            found = self._build_named(name, self.definitions[name])
            self.types[name] = found
        return found

    def _build_named(self, name: str, type_def: Any) -> Type:
        if type_def is None:
            return SimpleType(name)
        if isinstance(type_def, dict) and "is_a" in type_def:
            parent = self.get(type_def["is_a"])
            return SimpleType(name, parent if isinstance(parent, SimpleType) else None)
        if isinstance(type_def, dict) and not type_def:
            return SimpleType(name)
        built = self.build(type_def)
        if isinstance(built, (StructuredType, UnionType)):
            built.name = name
        return built

    def build(self, type_def: Any) -> Type:
        """Build an anonymous type from a nested definition or a type name."""
        if isinstance(type_def, str):
            return self.get(type_def)
        if "list" in type_def:
            return StructuredType("list", self.build(type_def["list"]))
        if "tuple" in type_def:
            return StructuredType("tuple", [self.build(t) for t in type_def["tuple"]])
        if "mapping" in type_def:
            mapping = type_def["mapping"]
            if isinstance(mapping, list):
                return StructuredType("mapping", (self.build(mapping[0]), self.build(mapping[1])))
            return StructuredType("mapping", {k: self.build(v) for k, v in mapping.items()})
        if "union" in type_def:
            members: list[Type] = []
            for member_def in type_def["union"]:
                member = self.build(member_def)
                if member not in members:
                    members.append(member)
            return UnionType(tuple(members))
        raise ValueError(f"not a type definition: {type_def!r}")


def common_base(first: Type, second: Type) -> Type:
    if isinstance(first, SimpleType) and isinstance(second, SimpleType):
        if first is second or second.is_subtype_of(first):
            return first
        if first.is_subtype_of(second):
            return second
        base = first.super_type
        while base is not None:
            if second.is_subtype_of(base):
                return base
            base = base.super_type
    return ANY


ReferenceTyper = Callable[[str], Type]


def infer_type(value: Any, reference_type: ReferenceTyper | None = None) -> Type:
    """The type of a literal; with ``reference_type``, ``$ref`` strings take their referent's."""
    if isinstance(value, str):
        if reference_type is not None and is_reference(value):
            return reference_type(value[1:])
        return STRING
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return NUMBER
    if value is None:
        return NULL
    if isinstance(value, Mapping):
        if not value:
            return StructuredType("mapping", {})
        key_base: Type | None = None
        for key in value:
            key_type = infer_type(key)
            key_base = key_type if key_base is None else common_base(key_base, key_type)
        if key_base is STRING:
            return StructuredType(
                "mapping", {k: infer_type(v, reference_type) for k, v in value.items()}
            )
        if key_base is INTEGER:
            value_types: list[Type] = []
            for item in value.values():
                item_type = infer_type(item, reference_type)
                if item_type not in value_types:
                    value_types.append(item_type)
            value_type = value_types[0] if len(value_types) == 1 else UnionType(tuple(value_types))
            return StructuredType("mapping", (INTEGER, value_type))
        return ANY
    if isinstance(value, (list, tuple)):
        return StructuredType("tuple", [infer_type(item, reference_type) for item in value])
    return ANY


def is_reference(value: str) -> bool:
    """``$name`` is a reference; ``$`` alone and ``$$...`` (an escape) are not."""
    return value != "$" and value.startswith("$") and not value.startswith("$$")


def compatible(arg: Type, param: Type) -> bool:
    """Whether a value of type ``arg`` may be passed where ``param`` is declared."""
    if param is ANY or arg is param or arg == param:
        return True
    if isinstance(arg, UnionType):
        return all(compatible(member, param) for member in arg.members)
    if isinstance(param, UnionType):
        return any(compatible(arg, member) for member in param.members)
    if isinstance(arg, SimpleType) and isinstance(param, SimpleType):
        return arg.is_subtype_of(param)
    if isinstance(arg, StructuredType) and isinstance(param, StructuredType):
        if arg.name is not None and param.name is not None:
            return False
        return _structures_compatible(arg, param)
    return False


def _structures_compatible(arg: StructuredType, param: StructuredType) -> bool:
    if arg.kind == "tuple" and param.kind == "list":
        return all(compatible(element, param.definition) for element in arg.definition)
    if arg.kind != param.kind:
        return False
    if arg.kind == "list":
        return compatible(arg.definition, param.definition)
    if arg.kind == "tuple":
        return len(arg.definition) == len(param.definition) and all(
            compatible(a, p) for a, p in zip(arg.definition, param.definition)
        )
    arg_enumerated = isinstance(arg.definition, dict)
    param_enumerated = isinstance(param.definition, dict)
    if arg_enumerated and param_enumerated:
        return arg.definition.keys() == param.definition.keys() and all(
            compatible(t, param.definition[k]) for k, t in arg.definition.items()
        )
    if arg_enumerated:
        key_type, value_type = param.definition
        return key_type is STRING and all(
            compatible(t, value_type) for t in arg.definition.values()
        )
    if param_enumerated:
        return False
    return compatible(arg.definition[0], param.definition[0]) and compatible(
        arg.definition[1], param.definition[1]
    )
