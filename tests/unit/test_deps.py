"""Finding futures in arguments and putting results in their place."""

import asyncio
from collections import namedtuple

import pytest

from plait.deps import find, substitute


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def resolved(loop, value):
    fut = loop.create_future()
    fut.set_result(value)
    return fut


def test_nothing_found_in_plain_arguments():
    assert find((1, "a", 2.0, None, [1, 2], {"k": (3,)}), {"x": b"y"}) is None


def test_futures_found_at_any_depth_and_counted_once(loop):
    a, b, c = (resolved(loop, v) for v in "abc")
    args = (a, [b, {"k": (c, a)}], {a})
    found = find(args, {"kw": frozenset({b})})
    assert found is not None
    futures, files = found
    assert list(futures.values()) == [a, b, c]  # in the order met, each once
    assert files == ()


def test_futures_and_files_are_found_in_the_order_of_the_arguments(loop):
    x, y = resolved(loop, 1), resolved(loop, 2)
    assert list(find((y, [x]), {})[0].values()) == [y, x]
    assert list(find(([x], y), {})[0].values()) == [x, y]

    class File:
        pass

    f = File()
    assert find((f,), {}) is None  # not a declared file type: opaque
    futures, files = find((x, {"in": f}), {"k": [f]}, (File,))
    assert list(futures.values()) == [x]
    assert files == [f, f]
    assert find(([f],), {}, (File,)) == ({}, [f])


def test_futures_in_dict_keys_are_found(loop):
    a = resolved(loop, "key")
    found = find(({a: 1},), {})
    assert found is not None and list(found[0].values()) == [a]


def test_results_replace_futures_in_nested_containers(loop):
    a, b = resolved(loop, 1), resolved(loop, 2)
    args, kwargs = substitute((a, [b, {"k": (a,)}], {b}), {"kw": {"x": a}})
    assert args == (1, [2, {"k": (1,)}], {2})
    assert kwargs == {"kw": {"x": 1}}


def test_containers_without_futures_are_passed_through_unchanged(loop):
    untouched = [1, 2, 3]
    args, _ = substitute((untouched, [resolved(loop, 1)]), {})
    assert args[0] is untouched


def test_named_tuples_keep_their_type(loop):
    Point = namedtuple("Point", "x y")
    args, _ = substitute((Point(resolved(loop, 1), 2),), {})
    assert args[0] == Point(1, 2)
    assert type(args[0]) is Point


def test_unhashable_result_in_a_set_raises_type_error(loop):
    with pytest.raises(TypeError):
        substitute(({resolved(loop, [1, 2])},), {})


def test_self_containing_list_raises_recursion_error():
    nested: list = []
    nested.append(nested)
    with pytest.raises(RecursionError):
        find((nested,), {})
