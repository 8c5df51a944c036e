"""xcore.codecache: the dataclasses' methods compiled ahead, and taken only when they are exactly what `exec`
would compile."""

from __future__ import annotations

import importlib.util
import marshal
import textwrap
from pathlib import Path

from conftest import fresh_python

SAMPLES = """
import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

@dataclass(frozen=True, order=True)
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    kind: ClassVar[str] = "point"

@dataclass(kw_only=True, slots=True)
class Box:
    items: list[int] = field(default_factory=list)
    name: str = "box"

    def __post_init__(self) -> None:
        self.name = self.name.upper()

@dataclass(eq=False, repr=False)
class Plain:
    value: "int"
"""


def write_samples(tmp_path: Path) -> Path:
    (tmp_path / "samples.py").write_text(SAMPLES)
    return tmp_path


def test_classes_made_from_the_cache_have_the_methods_exec_compiles(tmp_path: Path) -> None:
    folder = write_samples(tmp_path)
    cache = folder / "cache.marshal"
    out = fresh_python(
        f"import sys; sys.path.insert(0, {str(folder)!r})\n"
        f"from pathlib import Path\nfrom xcore import codecache\n"
        f"print(codecache.record(['samples'], Path({str(cache)!r})))"
    )
    assert int(out) >= 8  # Point: __init__, __repr__, __eq__, 4 orderings, __hash__, __setattr__, __delattr__...
    out = fresh_python(
        textwrap.dedent(f"""
        import dataclasses, importlib.util, inspect, sys
        from pathlib import Path
        sys.path.insert(0, {str(folder)!r})
        from xcore import codecache
        held = codecache.install(Path({str(cache)!r}))
        def nested(code):  # the module code, its __create_fn__, and the method inside that
            for const in code.co_consts:
                if hasattr(const, "co_code"):
                    yield const
                    yield from nested(const)
        inner = {{c for code in codecache._codes.values() for c in nested(code)}}
        import samples as cached
        left = len(codecache._codes)
        del dataclasses.exec  # the same classes again, compiled by dataclasses itself
        spec = importlib.util.spec_from_file_location("samples_plain", {str(folder / "samples.py")!r})
        plain = sys.modules["samples_plain"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(plain)
        checked = []
        for name in ("Point", "Box", "Plain"):
            a, b = getattr(cached, name), getattr(plain, name)
            for method in sorted(vars(a)):
                fa, fb = (inspect.unwrap(getattr(c, method)) for c in (a, b))  # __repr__ is wrapped
                if getattr(getattr(fa, "__code__", None), "co_filename", None) != "<string>":
                    continue  # not written by dataclasses (__post_init__, __match_args__...)
                checked.append((name, method))
                assert fa.__code__ in inner, (name, method, "not from the cache")
                ca, cb = fa.__code__, fb.__code__
                same = (ca.co_code, ca.co_consts, ca.co_names, ca.co_varnames, ca.co_filename, ca.co_flags) == (
                    cb.co_code, cb.co_consts, cb.co_names, cb.co_varnames, cb.co_filename, cb.co_flags)
                assert same, (name, method)
                assert repr(fa.__annotations__).replace("samples_plain", "samples") == repr(
                    fb.__annotations__).replace("samples_plain", "samples"), (name, method)
        p = cached.Point(1, 2)
        assert p < cached.Point(2) and p == cached.Point(1, 2) and hash(p) == hash(cached.Point(1, 2))
        assert repr(p) == "Point(x=1, y=2, tags=())"
        try:
            p.x = 3
        except dataclasses.FrozenInstanceError:
            pass
        else:
            raise AssertionError("a frozen dataclass took an assignment")
        assert cached.Box(items=[1]).name == "BOX" and cached.Box().items == []
        print(held, left, len(checked))
        """)
    )
    held, left, checked = map(int, out.split())
    assert held >= 8 and left == 0  # every recorded source was taken, and let go
    assert checked == held  # and each of them made one method of the three classes


def test_a_source_missing_from_the_cache_is_compiled_as_usual(tmp_path: Path) -> None:
    folder = write_samples(tmp_path)
    cache = folder / "cache.marshal"
    cache.write_bytes(marshal.dumps((importlib.util.MAGIC_NUMBER, {})))
    out = fresh_python(
        f"import sys; sys.path.insert(0, {str(folder)!r})\nfrom pathlib import Path\nfrom xcore import codecache\n"
        f"print(codecache.install(Path({str(cache)!r})))\n"
        f"import samples\nprint(samples.Point(1) == samples.Point(1), repr(samples.Box()))"
    )
    assert out.split("\n")[:2] == ["0", "True Box(items=[], name='BOX')"]


def test_a_cache_of_another_python_or_an_unreadable_one_is_ignored(tmp_path: Path) -> None:
    other = tmp_path / "other.marshal"
    other.write_bytes(marshal.dumps((b"\x00\x00\r\n", {"def f(): pass": compile("pass", "<string>", "exec")})))
    garbage = tmp_path / "garbage.marshal"
    garbage.write_bytes(b"not marshal data at all")
    out = fresh_python(
        "import dataclasses\nfrom pathlib import Path\nfrom xcore import codecache\n"
        f"print([codecache.install(Path(p)) for p in ({str(other)!r}, {str(garbage)!r}, {str(tmp_path / 'none')!r})])\n"
        "print(hasattr(dataclasses, 'exec'))"
    )
    assert out.split() == ["[0,", "0,", "0]", "False"]


def test_after_release_classes_are_compiled_as_usual(tmp_path: Path) -> None:
    folder = write_samples(tmp_path)
    cache = folder / "cache.marshal"
    fresh_python(
        f"import sys; sys.path.insert(0, {str(folder)!r})\nfrom pathlib import Path\nfrom xcore import codecache\n"
        f"codecache.record(['samples'], Path({str(cache)!r}))"
    )
    out = fresh_python(
        f"import sys; sys.path.insert(0, {str(folder)!r})\nfrom pathlib import Path\nfrom xcore import codecache\n"
        f"held = codecache.install(Path({str(cache)!r}))\ncodecache.release()\n"
        "import samples\n"
        "print(held, len(codecache._codes), samples.Point(1) == samples.Point(1), repr(samples.Box()))"
    )
    held, left, rest = out.strip().split(" ", 2)
    assert int(held) >= 8 and left == "0" and rest == "True Box(items=[], name='BOX')"
