"""Campaign content: subject, HTML and text templates with merge fields, rendered safely.

Templates are written by campaign editors and filled with each recipient's fields
(`{{ first_name | default("there") }}`, `{% if plan == "pro" %}...{% endif %}`). They
run in Jinja2's `SandboxedEnvironment` and only ever see plain data (text, numbers,
booleans: `merge_data`). HTML is autoescaped; the subject and the text part are not.

Missing fields. A field the recipient does not have is *reported*, never silently
printed as nothing: `RenderOutcome.missing_fields` lists it (StrictUndefined
semantics). `default(...)`, `is defined` and a plain truth test (`{% if company %}`)
are the ways to say "this field may be absent" and are not reported. The rest of the
message is still rendered (blank where the field was) so the preview can show it;
`outcome.ok` is false and the build blocks such a recipient
("missing field first_name for 3 recipients", `summarize_missing`).

Caps and why they are enforced in-process. A template must never hang or starve a
worker that renders 100,000 messages, so every render has an output cap per part, a
budget of text built, a step budget for loops and macro calls and a wall-clock time
cap per message (`RenderLimits`). We considered rendering in a subprocess with a hard
timeout: it is the bluntest guarantee, but costs a process round trip per message (or
a pool with watchdogs, restarts and pickling) against ~0.2 ms for a 4 KB render, and a
killed child still lets an attacker burn a CPU for the full timeout on every
recipient. Signals (SIGALRM) only work on the main thread and sys.settrace slows every
line. Instead the attack surface is closed inside the interpreter, at about half the
speed of a plain SandboxedEnvironment:

- Only a short allow-list of filters, tests and globals exists (no `attr`, `format`
  method, `lipsum`, `namespace`, `batch`, `center`, `indent`, `tojson`, `safe`, ...);
  attribute access is allowed only for a few read-only `str`/`dict` methods and the
  `loop` variable (so `''.__class__`, `|attr(...)` and `'{}'.format(...)` fail).
- `*`, `**`, `+` and `%` go through `call_binop` (this also stops Jinja from folding
  `'x' * 10**9` at compile time), `~` through a generated `guarded_concat`, and the
  amplifying filters (`replace`, `join`, `format`, `wordwrap`, `round`) check the
  size of their result *before* building it; no single value exceeds
  `max_value_chars`, integers stay under `max_int_bits`, `range` under 100,000.
- The parsed template is rewritten before compilation: every `for` loop iterates
  through a guard that counts steps and checks the deadline on each item and on each
  pass through its body, every macro call is counted with its nesting depth, and the
  static text a loop or macro writes is charged to the text budget. Every attribute
  lookup, call, filter and test also checks the deadline (outputs every 16th time:
  they are cheap). So CPU-only loops
  (`{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}`)
  stop at the step budget, and work between two checks is one operation on values
  of at most `max_value_chars`.
- Output is counted while streaming `generate()`, and text built in buffers that the
  stream does not see (macros, `{% set %}` blocks) is charged through `finalize`.
- Recursive loops, `{% include/import/extends %}` and `{% autoescape %}` blocks are
  refused when the template is checked.

Templates are compiled once per source text (an LRU cache) and rendered many times.
`html_to_text` (the text part when none is written) is a one-pass regex tokenizer,
linear in the HTML's size (~1 ms for 4 KB, ~1 s for a hostile 1 MB body).
"""

from __future__ import annotations

import functools
import html
import keyword
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dt_time
from decimal import Decimal
from typing import Any

import nh3
from jinja2 import TemplateSyntaxError, Undefined, UndefinedError, meta, nodes
from jinja2 import filters as jfilters
from jinja2 import tests as jtests
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.runtime import LoopContext, Macro, markup_join, str_join
from jinja2.sandbox import SandboxedEnvironment, safe_range
from jinja2.utils import missing
from markupsafe import Markup

from mailer_app.services import InvalidInput

PART_LABELS = {
    "subject": "subject",
    "html_body": "HTML body",
    "text_body": "text body",
    "pattern": "attachment pattern",
}
MAX_TEMPLATE_CHARS = 500_000  # source text of one part
MAX_SUBJECT_TEMPLATE_CHARS = 2_000
MAX_LITERAL_ITEMS = 1_000  # items in one list/tuple/dict written in a template
MAX_FORMAT_WIDTH = 200  # "%200s" is fine, "%999999999s" is an attack
MAX_HEADER_CHARS = 998  # RFC 5322 line length


@dataclass(frozen=True)
class RenderLimits:
    """Caps for rendering one message (all three parts together share the time)."""

    max_part_chars: int = 1_000_000  # rendered HTML or text part
    max_subject_chars: int = 998
    max_value_chars: int = 1_000_000  # any single text built inside a template
    max_work_chars: int = 5_000_000  # all text built while rendering one message
    max_steps: int = 1_000_000  # loop iterations + macro calls per message
    max_macro_depth: int = 50
    max_items: int = 100_000  # items in a list a filter builds or sorts
    max_int_bits: int = 4_096
    time_limit_s: float = 2.0


DEFAULT_LIMITS = RenderLimits()


class TemplateProblem(InvalidInput):
    """A template cannot be used: syntax error, forbidden construct or a cap exceeded.

    `field` is "subject", "html_body" or "text_body" (or "pattern"); `line` is the
    template line the problem is on, when known; the message says both in plain words.
    """

    def __init__(self, message: str, *, field: str | None = None, line: int | None = None):
        super().__init__(message, field=field)
        self.line = line


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    html: str
    text: str  # generated from `html` when the text template is empty


@dataclass(frozen=True)
class RenderOutcome:
    """One recipient's render. `message` is None when a part could not be finished
    (`error` says why, or a missing field stopped it); when fields are only printed
    blank, `message` holds the rendering and `missing_fields` lists them."""

    message: RenderedMessage | None
    missing_fields: tuple[str, ...]
    error: str | None

    @property
    def ok(self) -> bool:
        """Sendable as is: rendered, nothing missing, no error."""
        return self.message is not None and not self.missing_fields and self.error is None


@dataclass(frozen=True)
class RenderedText:
    """One rendered text template (used for attachment patterns)."""

    text: str | None
    missing_fields: tuple[str, ...]
    error: str | None


# --- the per-render budget -------------------------------------------------------------


class _Abort(Exception):
    """A cap was hit or a forbidden thing was done; the message is for people."""


class _MissingField(Exception):
    """A missing field was used in a way that cannot go on (`x + 1`, `x.attr`)."""


@dataclass
class _Budget:
    limits: RenderLimits
    deadline: float
    steps: int = 0
    outputs: int = 0
    work: int = 0
    depth: int = 0
    missing: dict[str, None] = field(default_factory=dict)  # ordered set

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Abort(
                f"the template took longer than {self.limits.time_limit_s:g} seconds to "
                "fill in; a loop or macro runs too long"
            )

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise _Abort(
                f"loops and macros ran more than {self.limits.max_steps:,} steps; "
                "make the loops shorter"
            )
        self.check_time()

    def charge(self, chars: int) -> None:
        if chars > self.limits.max_value_chars:
            raise _Abort(_too_long(chars, self.limits.max_value_chars))
        self.work += chars
        if self.work > self.limits.max_work_chars:
            raise _Abort(
                f"the template builds more than {self.limits.max_work_chars:,} characters "
                "of text; make loops and macros produce less"
            )


_BUDGET: ContextVar[_Budget | None] = ContextVar("mailer_template_budget", default=None)


def _too_long(chars: int, limit: int) -> str:
    return f"this would make a text of {chars:,} characters (the limit is {limit:,})"


def _limits() -> RenderLimits:
    budget = _BUDGET.get()
    return budget.limits if budget is not None else DEFAULT_LIMITS


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.check_time()


def _charge(value: Any) -> Any:
    """Count a text that was built against the budget (no-op at compile time)."""
    if isinstance(value, str):
        budget = _BUDGET.get()
        if budget is not None:
            budget.charge(len(value))
        elif len(value) > DEFAULT_LIMITS.max_value_chars:
            raise _Abort(_too_long(len(value), DEFAULT_LIMITS.max_value_chars))
    return value


def _check_value_size(chars: int) -> None:
    limit = _limits().max_value_chars
    if chars > limit:
        raise _Abort(_too_long(chars, limit))


# --- missing fields ----------------------------------------------------------------------


class _FieldUndefined(Undefined):
    """StrictUndefined that records a missing merge field instead of crashing.

    Printing, iterating, comparing or measuring a missing field records it and acts
    as empty; arithmetic, attribute access or calls record it and stop the part.
    Truth tests (`{% if x %}`), `is defined` and `default()` do not record.
    Other undefined values (a missing attribute of a real value, a blocked attribute)
    raise as StrictUndefined does.
    """

    __slots__ = ()

    def _is_field(self) -> bool:
        return (
            self._undefined_obj is missing
            and self._undefined_hint is None
            and self._undefined_exception is UndefinedError
            and isinstance(self._undefined_name, str)
        )

    def _record(self) -> None:
        if not self._is_field():
            super()._fail_with_undefined_error()
        budget = _BUDGET.get()
        if budget is not None:
            budget.missing[self._undefined_name] = None

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        self._record()
        raise _MissingField(self._undefined_name)

    __add__ = __radd__ = __sub__ = __rsub__ = _fail_with_undefined_error
    __mul__ = __rmul__ = __div__ = __rdiv__ = _fail_with_undefined_error
    __truediv__ = __rtruediv__ = _fail_with_undefined_error
    __floordiv__ = __rfloordiv__ = _fail_with_undefined_error
    __mod__ = __rmod__ = _fail_with_undefined_error
    __pos__ = __neg__ = _fail_with_undefined_error
    __call__ = __getitem__ = _fail_with_undefined_error
    __lt__ = __le__ = __gt__ = __ge__ = _fail_with_undefined_error
    __int__ = __float__ = __complex__ = _fail_with_undefined_error
    __pow__ = __rpow__ = _fail_with_undefined_error

    def __str__(self) -> str:
        self._record()
        return ""

    def __iter__(self):
        self._record()
        return iter(())

    def __len__(self) -> int:
        self._record()
        return 0

    def __contains__(self, item: Any) -> bool:
        self._record()
        return False

    def __eq__(self, other: Any) -> bool:
        self._record()
        return type(self) is type(other)

    def __ne__(self, other: Any) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return id(type(self))

    def __bool__(self) -> bool:
        if not self._is_field():
            super()._fail_with_undefined_error()
        return False


# --- bounded conversions ------------------------------------------------------------------

_SCALARS = (str, int, float, bool, type(None))


def _as_text(value: Any) -> Any:
    """Scalars unchanged; containers as their Python text, built with a size cap."""
    if isinstance(value, (*_SCALARS, Undefined)):
        return value
    limit = _limits().max_value_chars
    out: list[str] = []
    size = 0

    def emit(text: str) -> None:
        nonlocal size
        size += len(text)
        if size > limit:
            raise _Abort(f"this list is too large to print (over {limit:,} characters)")
        out.append(text)

    def walk(item: Any, depth: int) -> None:
        if depth > 20:
            raise _Abort("lists are nested too deeply")
        if isinstance(item, dict):
            pairs = list(item.items())
            emit("{")
            for i, (key, val) in enumerate(pairs):
                emit(", " if i else "")
                walk(key, depth + 1)
                emit(": ")
                walk(val, depth + 1)
            emit("}")
        elif isinstance(item, list | tuple | set | frozenset):
            open_, close = {list: "[]", tuple: "()"}.get(type(item), "{}")
            emit(open_)
            for i, val in enumerate(item):
                emit(", " if i else "")
                walk(val, depth + 1)
            emit("," if isinstance(item, tuple) and len(item) == 1 else "")
            emit(close)
        elif isinstance(item, _SCALARS):
            emit(repr(item))
        else:  # ranges, generators, loop objects, macros: short descriptions
            emit(str(item)[:200])

    walk(value, 0)
    return "".join(out)


def _weight(value: Any) -> None:
    """Refuse containers whose items or text exceed the caps (before sorting, joining)."""
    limits = _limits()
    items = chars = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, dict):
            items += len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            items += len(item)
            stack.extend(item)
        if items > limits.max_items or chars > limits.max_value_chars:
            raise _Abort(
                f"this list is too large (more than {limits.max_items:,} items or "
                f"{limits.max_value_chars:,} characters)"
            )


def _materialize(value: Any) -> Any:
    """Lists, tuples, dicts and text as they are (checked); other iterables as a list."""
    if isinstance(value, str) and len(value) > _limits().max_items:
        raise _Abort(
            f"this text is too long to treat as a list of letters (over {_limits().max_items:,})"
        )
    if isinstance(value, Undefined | str | list | tuple | dict | set | frozenset):
        _weight(value)
        return value
    if isinstance(value, range):
        if len(value) > _limits().max_items:
            raise _Abort(f"this range has more than {_limits().max_items:,} items")
        return value
    limit = _limits().max_items
    result = []
    try:
        iterator = iter(value)
    except TypeError:
        return value  # let the filter say it is not a list
    for item in iterator:
        result.append(item)
        if len(result) > limit:
            raise _Abort(f"this list has more than {limit:,} items")
    _weight(result)
    return result


# --- guarded filters -----------------------------------------------------------------------

_PERCENT = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[-#0 +]*(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d*))?[hlL]?"
    r"(?P<conv>[diouxXeEfFgGcrsa%])"
)


def _safe_percent(text: Any, args: Any) -> Any:
    """`text % args` after proving the result stays small (widths, repeated fields)."""
    text = _as_text(text)
    if isinstance(args, Mapping):
        mapping: Mapping[str, Any] | None = {k: _as_text(v) for k, v in args.items()}
        positional: list[Any] = []
    else:
        mapping = None
        positional = [_as_text(a) for a in (args if isinstance(args, tuple) else (args,))]
    if not isinstance(text, str):
        return text % (mapping if mapping is not None else tuple(positional))
    total = len(text)
    index = 0
    for match in _PERCENT.finditer(text):
        width, prec, conv = match["width"], match["prec"], match["conv"]
        if "*" in (width, prec):
            raise _Abort("'*' widths are not allowed in formats")
        for number in (width, prec):
            if number and (len(number) > 4 or int(number) > MAX_FORMAT_WIDTH):
                raise _Abort(f"format widths above {MAX_FORMAT_WIDTH} are not allowed")
        if conv == "%":
            continue
        if match["key"] is not None and mapping is not None:
            arg = mapping.get(match["key"], "")
        else:
            arg = positional[index] if index < len(positional) else ""
            index += 1
        # Markup escapes its arguments (up to 6x longer), %r/%a quote and escape them.
        grows = 6 if isinstance(text, Markup) or conv in "ra" else 1
        arg_chars = len(arg) * grows + 2 if isinstance(arg, str) else 1_300
        total += max(int(width or 0), arg_chars) + int(prec or 0)
    _check_value_size(total)
    return _charge(text % (mapping if mapping is not None else tuple(positional)))


def _format_filter(value: Any, *args: Any, **kwargs: Any) -> Any:
    if args and kwargs:
        raise _Abort("format() takes either positional values or named values, not both")
    return _safe_percent(value, kwargs or tuple(args))


@jfilters.pass_eval_context
def _replace_filter(eval_ctx, value, old, new, count=None):
    text = str(_as_text(value))
    old_text, new_text = str(_as_text(old)), str(_as_text(new))
    hits = text.count(old_text) if old_text else len(text) + 1
    if count is not None and 0 <= int(count) < hits:
        hits = int(count)
    _check_value_size(len(text) + hits * (len(new_text) - len(old_text)))
    return jfilters.do_replace(eval_ctx, _as_text(value), old, new, count)


@jfilters.pass_eval_context
def _join_filter(eval_ctx, value, d="", attribute=None):
    items = _materialize(value)
    if isinstance(items, Undefined):
        return jfilters.do_join(eval_ctx, items, d)
    if attribute is not None:
        getter = jfilters.make_attrgetter(eval_ctx.environment, attribute)
        items = [getter(item) for item in items]
    texts = [_as_text(item) for item in items]
    separator = str(_as_text(d))
    _check_value_size(sum(len(str(t)) for t in texts) + len(separator) * max(len(texts) - 1, 0))
    return jfilters.do_join(eval_ctx, texts, d)


@jfilters.pass_environment
def _wordwrap_filter(environment, s, width=79, break_long_words=True, wrapstring=None,
                     break_on_hyphens=True):  # fmt: skip
    text = str(_as_text(s))
    if len(text) > 200_000:
        raise _Abort("wordwrap works on texts of at most 200,000 characters")
    if wrapstring is not None and len(str(wrapstring)) > 10:
        raise _Abort("the wordwrap line separator can be at most 10 characters")
    if int(width) < 1:
        raise _Abort("wordwrap needs a width of at least 1")
    return jfilters.do_wordwrap(
        environment, text, width, break_long_words, wrapstring, break_on_hyphens
    )


def _round_filter(value, precision=0, method="common"):
    if abs(int(precision)) > 100:
        raise _Abort("round() precision must be between -100 and 100")
    return jfilters.do_round(value, precision, method)


def _guarded(func, *, text_input: bool = False, sized_input: bool = False):
    """Wrap a filter/test: check the deadline, bound its input, charge text output."""
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)  # copies the pass_context/eval_context marker too
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _tick()
        if (text_input or sized_input) and len(args) > skip:
            args = list(args)  # type: ignore[assignment]
            args[skip] = (  # type: ignore[index]
                _as_text(args[skip]) if text_input else _materialize(args[skip])
            )
        return _charge(func(*args, **kwargs))

    return wrapper


_TEXT_FILTERS = {
    "upper": jfilters.do_upper,
    "lower": jfilters.do_lower,
    "title": jfilters.do_title,
    "capitalize": jfilters.do_capitalize,
    "trim": jfilters.do_trim,
    "truncate": jfilters.do_truncate,
    "escape": jfilters.escape,
    "e": jfilters.escape,
    "string": jfilters.soft_str,
    "striptags": jfilters.do_striptags,
    "wordcount": jfilters.do_wordcount,
    "int": jfilters.do_int,
    "float": jfilters.do_float,
    "replace": _replace_filter,
    "wordwrap": _wordwrap_filter,
    "format": _format_filter,
}
_SIZED_FILTERS = {
    "join": _join_filter,
    "list": jfilters.do_list,
    "sort": jfilters.do_sort,
    "unique": jfilters.do_unique,
    "reverse": jfilters.do_reverse,
    "min": jfilters.do_min,
    "max": jfilters.do_max,
    "sum": jfilters.do_sum,
    "urlencode": jfilters.do_urlencode,
}
_PLAIN_FILTERS = {
    "default": jfilters.do_default,
    "d": jfilters.do_default,
    "length": len,
    "count": len,
    "first": jfilters.do_first,
    "last": jfilters.do_last,
    "abs": abs,
    "round": _round_filter,
    "map": jfilters.do_map,
    "select": jfilters.do_select,
    "reject": jfilters.do_reject,
}
ALLOWED_FILTERS = frozenset(_TEXT_FILTERS) | frozenset(_SIZED_FILTERS) | frozenset(_PLAIN_FILTERS)

# Read-only methods a template may call on text and dicts (no format, join, center, ...).
# fmt: off
_STR_METHODS = frozenset({
    "upper", "lower", "title", "capitalize", "casefold", "swapcase", "strip", "lstrip",
    "rstrip", "startswith", "endswith", "split", "rsplit", "splitlines", "partition",
    "rpartition", "removeprefix", "removesuffix", "count", "find", "rfind", "isdigit",
    "isalpha", "isalnum", "isspace", "islower", "isupper", "isnumeric", "isdecimal", "istitle",
})
_DICT_METHODS = frozenset({"items", "keys", "values", "get"})
_LOOP_ATTRIBUTES = frozenset({
    "index", "index0", "revindex", "revindex0", "first", "last", "length", "depth", "depth0",
    "previtem", "nextitem", "cycle", "changed",
})
# fmt: on


# --- the sandbox --------------------------------------------------------------------------


_GUARDS = frozenset({"loop_items", "loop_body", "macro_enter", "macro_exit"})


def _guard(name: str, *args: nodes.Expr, lineno: int) -> nodes.Call:
    """A call of one of the sandbox's guard methods (templates cannot write these)."""
    return nodes.Call(nodes.EnvironmentAttribute(name), list(args), [], None, None, lineno=lineno)


def _guard_statement(name: str, *args: nodes.Expr, lineno: int) -> nodes.ExprStmt:
    return nodes.ExprStmt(_guard(name, *args, lineno=lineno), lineno=lineno)


class _GuardedCodeGenerator(CodeGenerator):
    """Writes guard calls directly (not through the sandbox's call, not as output), and
    sends `a ~ b` through `environment.guarded_concat` so its size is checked."""

    def visit_Call(self, node: nodes.Call, frame: Frame, forward_caller: bool = False) -> None:
        if isinstance(node.node, nodes.EnvironmentAttribute) and node.node.name in _GUARDS:
            self.write(f"environment.{node.node.name}(")
            for index, arg in enumerate(node.args):
                self.write(", " if index else "")
                self.visit(arg, frame)
            self.write(")")
            return
        super().visit_Call(node, frame, forward_caller=forward_caller)

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            escape = "context.eval_ctx.autoescape"
        else:
            escape = repr(bool(frame.eval_ctx.autoescape))
        self.write(f"environment.guarded_concat({escape}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _finalize(value: Any) -> Any:
    """Every `{{ ... }}` output, also inside macros and set blocks: timed and charged."""
    budget = _BUDGET.get()
    if budget is None:
        return _charge(_as_text(value))
    budget.outputs += 1
    if not budget.outputs & 15:  # the clock every 16 outputs: outputs themselves are cheap
        budget.check_time()
    if isinstance(value, str):
        budget.work += len(value)
        if budget.work > budget.limits.max_work_chars:
            budget.charge(0)  # raises with the message
        return value
    if isinstance(value, Undefined):
        return value
    return _charge(_as_text(value))


def _range(*args: Any) -> range:
    _tick()
    try:
        return safe_range(*args)
    except OverflowError:
        raise _Abort("range() is limited to 100,000 numbers") from None


class _CampaignSandbox(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _GuardedCodeGenerator

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(
            autoescape=autoescape,
            undefined=_FieldUndefined,
            finalize=_finalize,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
            cache_size=0,
        )
        self.globals = {"range": _range}
        self.filters = {
            **{k: _guarded(f, text_input=True) for k, f in _TEXT_FILTERS.items()},
            **{k: _guarded(f, sized_input=True) for k, f in _SIZED_FILTERS.items()},
            **{k: _guarded(f) for k, f in _PLAIN_FILTERS.items()},
        }
        self.tests = {k: _guarded(f) for k, f in jtests.TESTS.items()}

    # Attribute access: a short allow-list, so `''.__class__`, `'{}'.format` and
    # list.append are all refused.
    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if attr.startswith("_"):
            return False
        if isinstance(obj, str):
            return attr in _STR_METHODS
        if isinstance(obj, dict):
            return attr in _DICT_METHODS
        if isinstance(obj, LoopContext):
            return attr in _LOOP_ATTRIBUTES
        return False

    def wrap_str_format(self, value: Any) -> None:
        return None  # str.format / format_map are refused, not wrapped

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return _charge(super().getitem(obj, argument))

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's signature)
        _tick()
        result = super().call(__context, __obj, *args, **kwargs)
        # A macro's output was charged as it was written; other calls (text methods) here.
        return result if isinstance(__obj, Macro) else _charge(result)

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        limits = _limits()
        if operator == "*":
            _check_product(left, right, limits)
        elif operator == "**":
            _check_power(left, right, limits)
        elif operator == "+":
            _check_sum(left, right, limits)
        elif operator == "%" and isinstance(left, str):
            return _safe_percent(left, right)
        return _charge(super().call_binop(context, operator, left, right))

    # Called by the code the rewritten templates contain (see `_add_guards`).
    def guarded_concat(self, autoescape: bool, parts: tuple[Any, ...]) -> str:
        _tick()
        texts = [_as_text(p) for p in parts]
        _check_value_size(sum(len(t) if isinstance(t, str) else 24 for t in texts))
        return _charge((markup_join if autoescape else str_join)(texts))

    def loop_items(self, iterable: Any):
        budget = _BUDGET.get()
        for item in iterable:
            if budget is not None:
                budget.step()
            yield item

    def loop_body(self, static_chars: int) -> None:
        budget = _BUDGET.get()
        if budget is not None:
            budget.check_time()
            if static_chars:
                budget.charge(static_chars)

    def macro_enter(self, static_chars: int) -> None:
        budget = _BUDGET.get()
        if budget is not None:
            budget.step()
            budget.depth += 1
            if budget.depth > budget.limits.max_macro_depth:
                raise _Abort(
                    f"macros call each other more than {budget.limits.max_macro_depth} levels deep"
                )
            if static_chars:
                budget.charge(static_chars)

    def macro_exit(self) -> None:
        budget = _BUDGET.get()
        if budget is not None:
            budget.depth -= 1


def _check_product(left: Any, right: Any, limits: RenderLimits) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > limits.max_int_bits:
            raise _Abort("this number would be too large")
        return
    seq, times = (left, right) if isinstance(right, int) else (right, left)
    if not isinstance(times, int) or times <= 0:
        return
    if isinstance(seq, str):
        _check_value_size(len(seq) * times)
    elif isinstance(seq, list | tuple):
        _weight(seq)
        size = max(len(seq), sum(len(x) for x in seq if isinstance(x, str)))
        if size * times > limits.max_items:
            raise _Abort(f"this would make a list of more than {limits.max_items:,} items")


def _check_power(left: Any, right: Any, limits: RenderLimits) -> None:
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and right > 0
        and abs(left) > 1
        and left.bit_length() * right > limits.max_int_bits
    ):
        raise _Abort("this number would be too large")


def _check_sum(left: Any, right: Any, limits: RenderLimits) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if max(left.bit_length(), right.bit_length()) >= limits.max_int_bits:
            raise _Abort("this number would be too large")
    elif isinstance(left, str) and isinstance(right, str):
        _check_value_size(len(left) + len(right))
    elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
        _weight(left)
        _weight(right)
        _weight([*left, *right])


_HTML_ENV = _CampaignSandbox(autoescape=True)
_TEXT_ENV = _CampaignSandbox(autoescape=False)


# --- compiling: check the tree, add the guards, cache ----------------------------------------


def _fail(node: nodes.Node, message: str) -> None:
    raise TemplateSyntaxError(message, node.lineno)


def _static_chars(env: _CampaignSandbox, body: list[nodes.Node]) -> int:
    """Characters a block writes every time it runs, not counting nested loops/macros."""
    total = 0
    eval_ctx = nodes.EvalContext(env)
    stack: list[nodes.Node] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.TemplateData):
            total += len(node.data)
        elif isinstance(node, nodes.For):
            stack.extend(node.else_)
        elif isinstance(node, nodes.Macro | nodes.CallBlock):
            continue
        elif isinstance(node, nodes.Output):
            for child in node.nodes:
                if isinstance(child, nodes.TemplateData):
                    total += len(child.data)
                    continue
                try:
                    total += len(str(child.as_const(eval_ctx)))
                except Exception:  # noqa: S112 (not constant: counted when it runs)
                    continue
        else:
            stack.extend(node.iter_child_nodes())
    return total


def _add_guards(env: _CampaignSandbox, tree: nodes.Template) -> None:
    """Refuse what templates may not do and add step/time/size guards to loops and macros."""
    for node in tree.find_all(nodes.Node):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            _fail(node, f"names starting with an underscore (like {node.attr}) are not allowed")
        if (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
            and node.arg.value.startswith("_")
        ):
            _fail(
                node, f"names starting with an underscore (like {node.arg.value}) are not allowed"
            )
        if isinstance(node, nodes.Extends | nodes.Include | nodes.Import | nodes.FromImport):
            _fail(node, "templates cannot include, import or extend other templates")
        if isinstance(node, nodes.EvalContextModifier):
            _fail(node, "{% autoescape %} blocks are not allowed")
        if isinstance(node, nodes.For) and node.recursive:
            _fail(node, "recursive loops are not allowed")
        if (
            isinstance(node, nodes.List | nodes.Tuple | nodes.Dict)
            and len(node.items) > MAX_LITERAL_ITEMS
        ):
            _fail(node, f"a list can have at most {MAX_LITERAL_ITEMS:,} items")
    tree.set_environment(env)
    for node in list(tree.find_all(nodes.For)):
        line = node.lineno
        node.iter = _guard("loop_items", node.iter, lineno=line)
        static = nodes.Const(_static_chars(env, node.body), lineno=line)
        node.body.insert(0, _guard_statement("loop_body", static, lineno=line))
    for node in list(tree.find_all((nodes.Macro, nodes.CallBlock))):
        line = node.lineno
        static = nodes.Const(_static_chars(env, node.body), lineno=line)
        node.body.insert(0, _guard_statement("macro_enter", static, lineno=line))
        node.body.append(_guard_statement("macro_exit", lineno=line))
    tree.set_environment(env)


@dataclass(frozen=True)
class _Compiled:
    template: Any
    names: tuple[str, ...]
    problem: str | None
    line: int | None


def _friendly_syntax_message(message: str) -> str:
    if match := re.search(r"No (filter|test) named '([^']+)'", message):
        return f"the {match[1]} '{match[2]}' is not available in campaign templates"
    if "unexpected end of template" in message.lower():
        return "a block ({% if %}, {% for %}, {% macro %}) is not closed: " + message
    return message


@functools.lru_cache(maxsize=64)
def _compile(autoescape: bool, source: str) -> _Compiled:
    env = _HTML_ENV if autoescape else _TEXT_ENV
    token = _BUDGET.set(None)  # constant folding at compile time is not this render's work
    try:
        tree = env.parse(source)
        names = tuple(sorted(meta.find_undeclared_variables(tree) - set(env.globals)))
        _add_guards(env, tree)
        code = env.compile(tree)
        template = env.template_class.from_code(env, code, env.make_globals(None))
    except TemplateSyntaxError as exc:
        return _Compiled(None, (), _friendly_syntax_message(exc.message or str(exc)), exc.lineno)
    except TemplateError as exc:
        return _Compiled(None, (), _friendly_syntax_message(str(exc)), None)
    except (RecursionError, SyntaxError, MemoryError):
        return _Compiled(None, (), "the template is nested too deeply", None)
    except ValueError as exc:  # e.g. a number literal with thousands of digits
        return _Compiled(None, (), f"the template has a value Python cannot read ({exc})", None)
    finally:
        _BUDGET.reset(token)
    return _Compiled(template, names, None, None)


def _label(part: str) -> str:
    return PART_LABELS.get(part, part.replace("_", " "))


def _problem_text(part: str, line: int | None, text: str) -> str:
    """ "Line 3 of the HTML body: <text>." (or "In the HTML body: ..." without a line)."""
    where = f"Line {line} of the {_label(part)}" if line else f"In the {_label(part)}"
    return f"{where}: {text}."


def _part_says(part: str, predicate: str) -> str:
    """ "The HTML body <predicate>."."""
    return f"The {_label(part)} {predicate}."


def _compiled_part(part: str, source: str, *, autoescape: bool) -> _Compiled:
    if not isinstance(source, str):
        raise TemplateProblem(_part_says(part, "must be text"), field=part)
    max_chars = MAX_SUBJECT_TEMPLATE_CHARS if part == "subject" else MAX_TEMPLATE_CHARS
    if len(source) > max_chars:
        raise TemplateProblem(
            _part_says(part, f"is too long (at most {max_chars:,} characters)"),
            field=part,
        )
    if part == "subject" and _HEADER_FORBIDDEN.search(source):
        raise TemplateProblem(
            _part_says(part, "cannot contain line breaks or control characters"),
            field=part,
        )
    compiled = _compile(autoescape, source)
    if compiled.problem:
        raise TemplateProblem(
            _problem_text(part, compiled.line, compiled.problem), field=part, line=compiled.line
        )
    return compiled


def check_template(source: str, *, field: str, autoescape: bool = False) -> list[str]:
    """The merge field names one template uses; raises TemplateProblem(field=field)."""
    return list(_compiled_part(field, source, autoescape=autoescape).names)


def find_template_problems(
    *, subject: str, html_body: str, text_body: str
) -> list[TemplateProblem]:
    """Every part's problem at once (empty when all three compile), for forms."""
    problems = []
    for part, source, autoescape in (
        ("subject", subject, False),
        ("html_body", html_body, True),
        ("text_body", text_body, False),
    ):
        try:
            _compiled_part(part, source, autoescape=autoescape)
        except TemplateProblem as problem:
            problems.append(problem)
    return problems


def check_templates(*, subject: str, html_body: str, text_body: str) -> list[str]:
    """The merge field names the three templates use (sorted); raises TemplateProblem."""
    names = set(check_template(subject, field="subject"))
    names |= set(check_template(html_body, field="html_body", autoescape=True))
    names |= set(check_template(text_body, field="text_body"))
    return sorted(names)


# --- rendering --------------------------------------------------------------------------------


def _template_line(exc: BaseException) -> int | None:
    """The template line Jinja's rewritten traceback points at (innermost)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _runtime_message(exc: BaseException) -> str:
    if isinstance(exc, _Abort):
        return str(exc)
    if isinstance(exc, SecurityError):
        text = str(exc)
        if match := re.search(r"access to attribute '([^']+)' of '([^']+)' object", text):
            return f"'{match[1]}' cannot be used on a {match[2]} value in templates"
        return f"this is not allowed in templates ({text})"
    if isinstance(exc, RecursionError):
        return "a macro calls itself too many times"
    if isinstance(exc, MemoryError):
        return "the template needs too much memory"
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    if isinstance(exc, UndefinedError):
        return str(exc)
    return f"the template failed ({type(exc).__name__}: {exc})"


def _render_part(part: str, source: str, values: dict[str, Any], budget: _Budget) -> str:
    """Render one part; raises TemplateProblem, _MissingField or _PartFailed."""
    compiled = _compiled_part(part, source, autoescape=part == "html_body")
    cap = budget.limits.max_subject_chars if part == "subject" else budget.limits.max_part_chars
    chunks: list[str] = []
    append = chunks.append
    size = 0
    stream = compiled.template.generate(values)
    try:
        for chunk in stream:
            append(chunk)
            size += len(chunk)
            if size > cap:
                raise _PartFailed(_part_says(part, f"would be longer than {cap:,} characters"))
    except (_PartFailed, _MissingField):
        raise
    except Exception as exc:  # everything a template can raise becomes a message
        raise _PartFailed(_problem_text(part, _template_line(exc), _runtime_message(exc))) from None
    finally:
        stream.close()
    return "".join(chunks)


class _PartFailed(Exception):
    pass


def render_message(
    *,
    subject: str,
    html_body: str,
    text_body: str,
    data: Mapping[str, Any],
    limits: RenderLimits = DEFAULT_LIMITS,
) -> RenderOutcome:
    """Fill the three templates for one recipient, within the caps; never raises for
    template problems (they come back in `error`)."""
    values = plain_data(data)
    budget = _Budget(limits=limits, deadline=time.monotonic() + limits.time_limit_s)
    token = _BUDGET.set(budget)
    rendered: dict[str, str | None] = {}
    error = None
    try:
        for part, source in (
            ("subject", subject),
            ("html_body", html_body),
            ("text_body", text_body),
        ):
            if part == "text_body" and not (source or "").strip():
                continue
            try:
                rendered[part] = _render_part(part, source, values, budget)
            except _MissingField:
                rendered[part] = None  # keep going: report every missing field
            except (TemplateProblem, _PartFailed) as exc:
                error = str(exc)
                break
    finally:
        _BUDGET.reset(token)
    missing_fields = tuple(budget.missing)
    if error is not None:
        return RenderOutcome(message=None, missing_fields=missing_fields, error=error)
    subject_text = rendered.get("subject")
    if subject_text is not None:
        if _HEADER_FORBIDDEN.search(subject_text):
            error = _part_says(
                "subject", "would contain a line break or control character (from a merge field)"
            )
            return RenderOutcome(message=None, missing_fields=missing_fields, error=error)
        subject_text = subject_text.strip()
    html_text = rendered.get("html_body")
    if "text_body" in rendered:
        text = rendered["text_body"]
    else:
        text = html_to_text(html_text) if html_text is not None else None
    if subject_text is None or html_text is None or text is None:
        return RenderOutcome(message=None, missing_fields=missing_fields, error=None)
    message = RenderedMessage(subject=subject_text, html=html_text, text=text)
    return RenderOutcome(message=message, missing_fields=missing_fields, error=None)


def render_text(
    source: str, data: Mapping[str, Any], *, field: str, limits: RenderLimits = DEFAULT_LIMITS
) -> RenderedText:
    """Fill one plain-text template (no autoescape), within the caps; never raises for
    template problems. Used for attachment patterns."""
    budget = _Budget(limits=limits, deadline=time.monotonic() + limits.time_limit_s)
    token = _BUDGET.set(budget)
    try:
        text: str | None = _render_part(field, source, plain_data(data), budget)
        error = None
    except _MissingField:
        text, error = None, None
    except (TemplateProblem, _PartFailed) as exc:
        text, error = None, str(exc)
    finally:
        _BUDGET.reset(token)
    return RenderedText(text=text, missing_fields=tuple(budget.missing), error=error)


def summarize_missing(outcomes: Iterable[RenderOutcome]) -> list[str]:
    """["missing field first_name for 3 recipients", ...], most frequent first."""
    counts: Counter[str] = Counter()
    for outcome in outcomes:
        counts.update(set(outcome.missing_fields))
    return [
        f"missing field {name} for {count} recipient{'' if count == 1 else 's'}"
        for name, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


# --- merge data -------------------------------------------------------------------------------

_JINJA_WORDS = frozenset({"true", "false", "none", "and", "or", "not", "in", "is", "if", "else"})


def merge_field_name(name: str) -> str:
    """The merge field a column is addressed by: "Customer ID" -> "customer_id"."""
    text = re.sub(r"\W+", "_", str(name).strip().lower()).strip("_")
    if not text:
        return ""
    if not text[0].isalpha():
        text = "f_" + text
    if keyword.iskeyword(text) or text in _JINJA_WORDS or text == "loop":
        text += "_"
    return text if text.isidentifier() else ""


def _plain_value(value: Any) -> str | int | float | bool | None:
    """Only plain values reach templates: no objects with methods or attributes."""
    if value is None or isinstance(value, bool):
        return None if value is None else bool(value)
    if isinstance(value, str):
        return str.__str__(value)  # a Markup or other subclass becomes plain text
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | dt_time):
        return value.isoformat()
    return str(_as_text(value)) if isinstance(value, list | tuple | dict) else str(value)


def plain_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with text keys and plain values only (what render_message gives templates)."""
    return {str(key): _plain_value(value) for key, value in (data or {}).items()}


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def merge_data(
    *,
    email: str,
    first_name: str = "",
    last_name: str = "",
    fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A recipient's merge fields: email, first_name, last_name and custom fields (names
    normalized with `merge_field_name`). Blank values are left out, so templates see
    them as missing and `default()` applies."""
    data: dict[str, Any] = {"email": _plain_value(email)}
    for key, value in (("first_name", first_name), ("last_name", last_name)):
        if not _blank(value):
            data[key] = _plain_value(value)
    for key, value in (fields or {}).items():
        name = merge_field_name(key)
        if not name or name in data or name == "email" or _blank(value):
            continue
        data[name] = _plain_value(value)
    return data


# --- header values ----------------------------------------------------------------------------

# C0 controls (CR, LF, NUL, TAB, ...), DEL, and the Unicode line breaks Python splits on.
_HEADER_FORBIDDEN = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")
_FIELD_LABELS = {"subject": "subject", "from_name": "sender name", "reply_to": "reply-to address"}


def check_header_value(value: str, *, field: str, max_length: int = MAX_HEADER_CHARS) -> str:
    """A value that goes into a mail header (subject, names), stripped; refuses line
    breaks and control characters (header injection) with InvalidInput(field=field)."""
    label = _FIELD_LABELS.get(field, field.replace("_", " "))
    if not isinstance(value, str):
        raise InvalidInput(f"The {label} must be text.", field=field)
    if _HEADER_FORBIDDEN.search(value):
        raise InvalidInput(
            f"The {label} cannot contain line breaks or control characters.", field=field
        )
    text = value.strip()
    if len(text) > max_length:
        raise InvalidInput(
            f"The {label} is too long (at most {max_length} characters).", field=field
        )
    return text


# --- preview ----------------------------------------------------------------------------------

_PREVIEW_TAGS = set(nh3.ALLOWED_TAGS) | {"font", "style", "tfoot"}
_PREVIEW_ATTRIBUTES = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
_PREVIEW_ATTRIBUTES["*"] = {
    "style", "class", "id", "title", "lang", "dir", "align", "valign", "width", "height",
    "bgcolor", "border", "cellpadding", "cellspacing", "role",
}  # fmt: skip
_PREVIEW_ATTRIBUTES["font"] = {"color", "face", "size"}
_PREVIEW_URL_SCHEMES = {"http", "https", "mailto", "tel"}
_PREVIEW_CSP = (
    "default-src 'none'; img-src http: https:; style-src 'unsafe-inline'; font-src http: https:"
)


def preview_html(html_text: str) -> str:
    """The rendered HTML made safe for the preview iframe (nh3/ammonia): no scripts,
    event handlers, forms, frames or javascript:/data: URLs; layout and styles kept."""
    return nh3.clean(
        html_text or "",
        tags=_PREVIEW_TAGS,
        clean_content_tags={"script", "title", "template", "noscript", "textarea", "select"},
        attributes=_PREVIEW_ATTRIBUTES,
        url_schemes=_PREVIEW_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def preview_document(html_text: str) -> str:
    """A whole document for `<iframe sandbox srcdoc=...>`: sanitized HTML plus a
    Content-Security-Policy that forbids scripts even if one slipped through."""
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_PREVIEW_CSP}">'
        f"</head><body>{preview_html(html_text)}</body></html>"
    )


# --- HTML to text -----------------------------------------------------------------------------

_SKIP_CONTENT = {"script", "style", "head", "title", "template", "svg", "noscript"}
_BLOCKS = {
    "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "header", "main", "nav",
    "section", "table", "tbody", "thead", "tfoot", "tr", "ul", "ol",
}  # fmt: skip
_SPACES = re.compile(r"\s+")
_PARAGRAPHS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "table", "ul", "ol"}


# One pass over the HTML with a regex tokenizer: several times faster than
# html.parser, which matters when a text part is made for every recipient.
_TOKEN = re.compile(
    # No part may run over a "<", so a broken tag costs one short scan, never a long one.
    r"<!--.*?(?:-->|\Z)|<![^<>]*>|<\?[^<>]*>"
    r"|<(/?)([A-Za-z][A-Za-z0-9]*)((?:[^<>\"']|\"[^<\"]*\"|'[^<']*')*)>|[^<]+|<",
    re.S,
)
_ATTRIBUTE = re.compile(r"""([A-Za-z_:][-\w:.]*)\s*(?:=\s*("[^"]*"|'[^']*'|[^\s"'>]+))?""")


def _attributes(text: str) -> dict[str, str]:
    found = {}
    for name, value in _ATTRIBUTE.findall(text):
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        found[name.lower()] = html.unescape(value)
    return found


class _TextMaker:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.skip = 0
        self.pre = 0
        self.breaks = 0  # newlines owed before the next text
        self.at_line_start = True
        self.lists: list[list[int]] = []  # [ordered?, counter] per open list
        self.links: list[tuple[str, int]] = []
        self.cells = 0

    def _need(self, newlines: int) -> None:
        self.breaks = max(self.breaks, newlines)

    def _write(self, text: str, *, raw: bool = False) -> None:
        if not text:
            return
        if self.out and self.breaks:
            self.out.append("\n" * self.breaks)
            self.at_line_start = True
        self.breaks = 0
        if raw:
            pass
        elif self.at_line_start and not self.pre:
            text = text.lstrip(" ")
            if not text:
                return
        elif not self.pre and text.startswith(" ") and self.out and self.out[-1].endswith(" "):
            text = text.lstrip(" ")
        self.out.append(text)
        self.at_line_start = text.endswith("\n")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_CONTENT:
            self.skip += 1
            return
        if self.skip:
            return
        attr = dict(attrs)
        if tag == "br":
            self.out.append("\n")
            self.at_line_start = True
            self.breaks = 0
        elif tag in _PARAGRAPHS:
            self._need(2)
        elif tag in _BLOCKS:
            self._need(1)
        if tag == "pre":
            self.pre += 1
        elif tag in ("ul", "ol"):
            self.lists.append([tag == "ol", 0])
        elif tag == "li":
            self._need(1)
            marker = "- "
            if self.lists and self.lists[-1][0]:
                self.lists[-1][1] += 1
                marker = f"{self.lists[-1][1]}. "
            self._write("  " * max(len(self.lists) - 1, 0) + marker, raw=True)
        elif tag == "tr":
            self.cells = 0
        elif tag in ("td", "th"):
            if self.cells:
                self._write(" ")
            self.cells += 1
        elif tag == "hr":
            self._need(1)
            self._write("-" * 30)
            self._need(1)
        elif tag == "img" and attr.get("alt"):
            self._write(f"[{attr['alt'].strip()}]")
        elif tag == "a":
            self.links.append((attr.get("href") or "", len(self.out)))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_CONTENT:
            self.skip = max(self.skip - 1, 0)
            return
        if self.skip:
            return
        if tag == "pre":
            self.pre = max(self.pre - 1, 0)
        if tag in ("ul", "ol") and self.lists:
            self.lists.pop()
        if tag == "a" and self.links:
            href, start = self.links.pop()
            label = "".join(self.out[start:]).strip()
            target = href.removeprefix("mailto:")
            if href.startswith(("http://", "https://", "mailto:")) and target not in label:
                self._write(f" ({target})" if label else target)
        if tag in _PARAGRAPHS:
            self._need(2)
        elif tag in _BLOCKS or tag in ("li", "tr"):
            self._need(1)

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if "&" in data:
            data = html.unescape(data)
        self._write(data if self.pre else _SPACES.sub(" ", data))

    def feed(self, source: str) -> None:
        position, end = 0, len(source)
        text: list[str] = []  # runs of text (and stray "<") handled together
        while position < end:
            match = _TOKEN.match(source, position)
            position = match.end()
            tag = match[2]
            if tag is None:
                if match[0] == "<" or match[0][:2] not in ("<!", "<?"):
                    text.append(match[0])
                continue
            if text:
                self.handle_data("".join(text))
                text.clear()
            tag = tag.lower()
            if match[1]:
                self.handle_endtag(tag)
                continue
            wanted = match[3] if tag in ("a", "img") else ""
            self.handle_starttag(tag, list(_attributes(wanted).items()))
            if tag in _SKIP_CONTENT:  # jump over the content, like a browser would
                closing = re.compile(rf"</{tag}\s*>" + (r"|<body\b" if tag == "head" else ""), re.I)
                found = closing.search(source, position)
                position = found.start() if found else end
                self.skip = 0
        if text:
            self.handle_data("".join(text))


def html_to_text(html_text: str) -> str:
    """A readable plain-text version of an HTML body (the text part when none is written):
    paragraphs and line breaks kept, lists as "- item", links as "label (url)", no
    scripts or styles, entities decoded."""
    maker = _TextMaker()
    maker.feed(html_text or "")
    text = "".join(maker.out)
    lines = [line.rstrip() for line in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return text.strip()
