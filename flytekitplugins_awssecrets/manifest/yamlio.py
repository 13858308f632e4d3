"""YAML reading and writing for manifest files, keeping every scalar as the text its author wrote.

PyYAML's ``safe_load`` follows YAML 1.1 and silently re-types plain scalars: ``0123`` becomes ``83``, ``yes``
becomes ``True``, ``~`` becomes ``None`` and ``1.50`` becomes ``1.5``. For a file of parameter values that is
data loss (psyml's defect), so :class:`TextLoader` drops every implicit resolver: a plain scalar is a ``str``,
exactly as written. Complex mapping keys (``? [a, b]``) and duplicate keys are refused instead of the last one silently winning, and so are anchors
and aliases (``&a`` / ``*a``), with which a small file expands to megabytes.

Writing goes the other way: :func:`dump` uses PyYAML's standard resolvers, so a string that a YAML 1.1 reader
would re-type (``'0123'``, ``'yes'``) is quoted, and psyml (``yaml.safe_load``) reads our output back as the
same strings.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["TextLoader", "YamlError", "load", "dump"]


class YamlError(ValueError):
    """A file that is not valid YAML, or uses YAML features a manifest does not allow (with line number).

    Example::

        try:
            load("a: 1\na: 2", "f.yml")
        except YamlError as e:
            print(e)  # f.yml: line 2: duplicate key 'a' in one mapping
    """


class TextLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no stubs here
    """A SafeLoader that constructs every plain scalar as ``str`` and refuses duplicate mapping keys.

    Example::

        >>> yaml.load("a: 0123\\nb: yes\\nc: ~\\nd: 1.50", Loader=TextLoader)
        {'a': '0123', 'b': 'yes', 'c': '~', 'd': '1.50'}
    """

    # Class attribute copied per subclass: with no implicit resolvers every untagged plain scalar resolves
    # to the default str tag. Explicit tags (``!!int 5``) still work, which is the author's explicit wish.
    yaml_implicit_resolvers: dict[Any, Any] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        # Anchors and aliases let a few hundred bytes expand to megabytes ("billion laughs"); a manifest
        # has no use for them, so they are refused before anything is expanded.
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            mark = event.start_mark
            raise YamlError(
                f"line {mark.line + 1}: YAML anchors and aliases (&name, *name) are not allowed in a manifest"
            )
        return super().compose_node(parent, index)  # type: ignore[no-untyped-call]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                # A complex key (``? [a, b]``, ``? {a: 1}``) is no name a manifest could mean.
                mark = key_node.start_mark
                kind = "sequence" if isinstance(key_node, yaml.SequenceNode) else "mapping"
                raise YamlError(f"line {mark.line + 1}: a mapping key must be a plain name, not a {kind}")
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                hash(key)
            except TypeError:
                mark = key_node.start_mark
                raise YamlError(f"line {mark.line + 1}: a mapping key must be a plain name") from None
            if key in seen:
                mark = key_node.start_mark
                raise YamlError(f"line {mark.line + 1}: duplicate key {key!r} in one mapping")
            seen[key] = True
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def load(text: str, source: str = "<string>") -> Any:
    """Parse YAML text with :class:`TextLoader`; errors name the source and line, never a value."""
    try:
        return yaml.load(text, Loader=TextLoader)  # noqa: S506 - TextLoader is a SafeLoader
    except YamlError as e:
        raise YamlError(f"{source}: {e}") from None
    except yaml.MarkedYAMLError as e:
        # The problem text is PyYAML's description of the syntax error (no scalar contents); the mark gives
        # the position. The snippet PyYAML would print could hold a value, so it is left out.
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise YamlError(f"{source}: invalid YAML at {where}: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise YamlError(f"{source}: invalid YAML ({type(e).__name__})") from None
    except RecursionError:
        raise YamlError(f"{source}: nested too deeply to read") from None


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]
    """SafeDumper that writes multi-line strings as literal blocks, so a PEM key stays readable."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data and data == data.rstrip(" ") and "\r" not in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


def dump(data: Any) -> str:
    """Serialise plain data (dicts in insertion order, lists, str, bool) as block-style YAML."""
    return str(
        yaml.dump(
            data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=10**6
        )
    )
