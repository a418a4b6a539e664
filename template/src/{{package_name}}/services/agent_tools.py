"""The tools an agent run may call: each an async function with a Pydantic model of its
arguments, registered in one `ToolRegistry`.

The registry lives on the app's resources (`Resources.tools`); `default_tools()` is the one
place the service's own tools are registered. Add yours there, or register them on
`resources.tools` at start-up. A tool gets its arguments validated, and what it returns must
be JSON: it is streamed to the caller and kept with the run.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

A = TypeVar("A", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Tool(Generic[A]):
    name: str
    description: str
    arguments: type[A]
    function: Callable[[A], Awaitable[Any]]

    def schema(self) -> dict[str, Any]:
        """The JSON schema of the arguments, as the planner is shown it."""
        return self.arguments.model_json_schema()

    async def call(self, arguments: dict[str, Any]) -> Any:
        """Run the tool; raises `pydantic.ValidationError` for arguments it does not take."""
        return await self.function(self.arguments.model_validate(arguments))


class ToolRegistry:
    def __init__(self, tools: list[Tool[Any]] | None = None) -> None:
        self._tools: dict[str, Tool[Any]] = {}
        for tool in tools or []:
            self.register(tool)

    def register(self, tool: Tool[Any]) -> None:
        if tool.name in self._tools:
            msg = f"a tool named {tool.name!r} is already registered"
            raise ValueError(msg)
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool[Any] | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def tools(self) -> list[Tool[Any]]:
        return [self._tools[name] for name in self.names()]


class CalculatorArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expression: str = Field(
        min_length=1, max_length=200, description="Arithmetic: numbers, + - * / // % ** ( )"
    )


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
# Past these an expression of 200 characters could still take minutes or gigabytes.
_LARGEST_EXPONENT = 100
_LARGEST_MAGNITUDE = 10**100


class CalculationError(ValueError):
    pass


def calculate(expression: str) -> int | float:
    """The value of an arithmetic expression, walked node by node: never `eval`."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as error:
        msg = f"not an arithmetic expression: {expression!r}"
        raise CalculationError(msg) from error
    return _evaluate(tree.body)


def _evaluate(node: ast.expr) -> int | float:
    # Not bool, which is an int too.
    if isinstance(node, ast.Constant) and type(node.value) in {int, float}:
        return cast("int | float", node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        result: int | float = _UNARY[type(node.op)](_evaluate(node.operand))
        return result
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _LARGEST_EXPONENT:
            msg = f"exponents are at most {_LARGEST_EXPONENT}"
            raise CalculationError(msg)
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError as error:
            msg = "division by zero"
            raise CalculationError(msg) from error
        if isinstance(result, complex) or abs(result) > _LARGEST_MAGNITUDE:
            msg = "the result is out of range"
            raise CalculationError(msg)
        return result
    msg = f"only numbers and + - * / // % ** are allowed, not {ast.unparse(node)!r}"
    raise CalculationError(msg)


async def calculator(arguments: CalculatorArguments) -> dict[str, int | float]:
    return {"value": calculate(arguments.expression)}


class WordCountArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=100_000, description="The text to count")


async def word_count(arguments: WordCountArguments) -> dict[str, int]:
    text = arguments.text
    return {
        "words": len(text.split()),
        "characters": len(text),
        "lines": len(text.splitlines()),
    }


def default_tools() -> ToolRegistry:
    """The service's own tools: deterministic, and safe with any arguments."""
    return ToolRegistry(
        [
            Tool(
                name="calculator",
                description="Evaluates an arithmetic expression exactly",
                arguments=CalculatorArguments,
                function=calculator,
            ),
            Tool(
                name="word_count",
                description="Counts the words, characters and lines of a text",
                arguments=WordCountArguments,
                function=word_count,
            ),
        ]
    )
