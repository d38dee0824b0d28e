"""remote_gen: items stream back as the remote generator makes them."""

from __future__ import annotations

import asyncio
import time

import pytest
import remotecell as rc
from conftest import wait_for
from remotecell import exceptions


def test_items_arrive_as_they_are_made(app, tmp_path):
    gate = tmp_path / "more"

    @app.function()
    def produce(n):
        for i in range(n):
            print("making", i)
            yield {"i": i}
            if i == 0:  # the caller has the first item before the generator goes on
                while not gate.exists():
                    time.sleep(0.01)

    items = produce.remote_gen(3)
    assert next(items) == {"i": 0}
    gate.touch()
    assert list(items) == [{"i": 1}, {"i": 2}]


def test_async_generators_and_aio(app):
    @app.function()
    async def countdown(n):
        for i in range(n, 0, -1):
            await asyncio.sleep(0)
            yield i

    @app.function()
    def squares(n):
        yield from (i * i for i in range(n))

    async def main():
        return [x async for x in countdown.remote_gen.aio(3)], [x async for x in squares.remote_gen.aio(4)]

    assert asyncio.run(main()) == ([3, 2, 1], [0, 1, 4, 9])
    assert list(countdown.remote_gen(2)) == [2, 1]


def test_errors_and_wrong_calling_forms(app):
    @app.function()
    def fails_after_one():
        yield 1
        raise ValueError("generator broke")

    @app.function()
    def plain():
        return 1

    items = fails_after_one.remote_gen()
    assert next(items) == 1
    with pytest.raises(ValueError, match="generator broke"):
        next(items)
    with pytest.raises(exceptions.InvalidError, match="is a generator function: iterate over"):
        fails_after_one.remote()
    with pytest.raises(exceptions.InvalidError, match="is not a generator function: call"):
        plain.remote_gen()


def test_stopping_early_stops_the_remote_generator(app, tmp_path):
    @app.function()
    def endless():
        i = 0
        while True:
            yield i
            i += 1
            time.sleep(0.01)

    items = endless.remote_gen()
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    wait_for(lambda: endless.stats()["running"] == 0, timeout_s=15, what="the remote generator to be stopped")


def test_generator_methods_of_a_class(app):
    @app.cls()
    class Tokens:
        @rc.method()
        def split(self, text):
            yield from text.split()

    assert list(Tokens().split.remote_gen("a b c")) == ["a", "b", "c"]
