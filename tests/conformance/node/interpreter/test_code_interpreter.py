"""run_code and contexts through the unmodified Python SDK, in sandboxes of
the code-interpreter-v1 template (hearth-interpreter on port 49999 over
ipykernel and bash_kernel)."""

import time

import pytest

from e2b.exceptions import InvalidArgumentException, NotFoundException, TimeoutException
from e2b_code_interpreter import Sandbox


def test_state_output_and_callbacks(sandbox):
    seen = {"stdout": [], "stderr": [], "result": [], "error": []}
    first = sandbox.run_code(
        "x = 41\nprint('to stdout')\nimport sys; print('to stderr', file=sys.stderr)",
        on_stdout=lambda m: seen["stdout"].append(m.line),
        on_stderr=lambda m: seen["stderr"].append(m.line),
    )
    assert first.logs.stdout == ["to stdout\n"] and first.logs.stderr == ["to stderr\n"]
    assert seen["stdout"] == ["to stdout\n"] and seen["stderr"] == ["to stderr\n"]
    assert first.error is None and first.results == []
    second = sandbox.run_code("x + 1", on_result=seen["result"].append)
    assert second.text == "42"
    assert [r.text for r in seen["result"]] == ["42"]
    assert second.execution_count == first.execution_count + 1


def test_errors_name_value_and_traceback(sandbox):
    errors = []
    execution = sandbox.run_code("def f():\n    return 1 / 0\nf()", on_error=errors.append)
    assert execution.error.name == "ZeroDivisionError"
    assert execution.error.value == "division by zero"
    assert "ZeroDivisionError" in execution.error.traceback and "f()" in execution.error.traceback
    assert "\x1b[" not in execution.error.traceback  # plain text, no terminal colours
    assert [e.name for e in errors] == ["ZeroDivisionError"]
    # The context goes on.
    assert sandbox.run_code("'still here'").text == "still here"


def test_several_displays_and_rich_results(sandbox):
    execution = sandbox.run_code(
        "from IPython.display import display, HTML, Markdown, Latex\n"
        "display(HTML('<b>bold</b>'))\n"
        "display(Markdown('# title'))\n"
        "display({'text/latex': r'$x^2$'}, raw=True)\n"
        "{'a': 1}"
    )
    html, markdown, latex, main = execution.results
    assert html.html == "<b>bold</b>" and not html.is_main_result
    assert markdown.markdown == "# title"
    assert latex.latex == "$x^2$" and latex.formats() == ["latex"]
    assert main.is_main_result and main.text == "{'a': 1}" and main.json == {"a": 1}
    # JSON of numpy values and NaN: numbers and null, as in E2B.
    numbers = sandbox.run_code("import numpy as np\n{'n': np.int64(5), 'f': float('nan'), 'a': np.arange(2)}")
    assert numbers.results[0].json == {"n": 5, "f": None, "a": [0, 1]}


def test_a_matplotlib_figure_is_a_png(sandbox):
    execution = sandbox.run_code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.title('t')\nplt.show()"
    )
    assert execution.error is None, execution.error
    (figure,) = execution.results
    assert figure.png and figure.png.startswith("iVBORw0KGgo")  # base64 of the PNG magic
    assert not figure.is_main_result


def test_a_dataframe_is_html_and_data(sandbox):
    execution = sandbox.run_code(
        "import pandas as pd, numpy as np\n"
        "pd.DataFrame({'a': [1, 2], 'b': ['x', 'y'], 'c': [0.5, np.nan], 'd': pd.to_datetime(['2026-01-02', '2026-03-04'])})"
    )
    assert execution.error is None, execution.error
    (frame,) = execution.results
    assert "<table" in frame.html
    assert frame.data == {
        "a": [1, 2],
        "b": ["x", "y"],
        "c": [0.5, None],
        "d": ["2026-01-02T00:00:00", "2026-03-04T00:00:00"],
    }
    # A frame too large for one message keeps its (shortened) HTML only.
    (large,) = sandbox.run_code("pd.DataFrame({'n': range(300_000)})").results
    assert "<table" in large.html and large.data is None


def test_contexts_are_isolated_restartable_and_removable(sandbox):
    context = sandbox.create_code_context(cwd="/tmp")
    assert context.language == "python" and context.cwd == "/tmp"
    sandbox.run_code("secret = 'in the context'", context=context)
    assert sandbox.run_code("import os; os.getcwd()", context=context).text == "/tmp"
    assert sandbox.run_code("secret", context=context).text == "in the context"
    assert sandbox.run_code("secret").error.name == "NameError"
    listed = sandbox.list_code_contexts()
    assert context.id in [c.id for c in listed]
    assert {c.language for c in listed} >= {"python"}
    sandbox.restart_code_context(context)
    assert sandbox.run_code("secret", context=context).error.name == "NameError"
    sandbox.remove_code_context(context.id)
    assert context.id not in [c.id for c in sandbox.list_code_contexts()]
    with pytest.raises(NotFoundException):
        sandbox.run_code("1", context=context)


def test_the_default_context_works_in_home(sandbox):
    assert sandbox.run_code("import os; os.getcwd()").text == "/home/user"
    # (IPython runs `!` commands on a pty: lines end in \r\n, as in E2B.)
    assert "".join(sandbox.run_code("!pwd").logs.stdout).strip() == "/home/user"


def test_env_vars_for_one_execution(sandbox):
    execution = sandbox.run_code("import os; os.environ.get('ONLY_NOW')", envs={"ONLY_NOW": "yes"})
    assert execution.text == "yes"
    assert sandbox.run_code("import os; repr(os.environ.get('ONLY_NOW'))").text == "None"


def test_sandbox_env_vars_reach_the_kernels():
    with Sandbox.create(envs={"FROM_CREATE": "sandbox-wide"}, timeout=120) as sbx:
        assert sbx.run_code("import os; os.environ['FROM_CREATE']").text == "sandbox-wide"
        over = sbx.run_code("import os; os.environ['FROM_CREATE']", envs={"FROM_CREATE": "shadowed"})
        assert over.text == "shadowed"
        assert sbx.run_code("import os; os.environ['FROM_CREATE']").text == "sandbox-wide"


def test_bash(sandbox):
    execution = sandbox.run_code("N=6; echo $((N * 7))", language="bash")
    assert execution.logs.stdout == ["42\n"]
    assert any(c.language == "bash" for c in sandbox.list_code_contexts())


def test_javascript_and_typescript_run_on_deno(sandbox):
    out = []
    first = sandbox.run_code("let a = 40;\nconsole.log('from deno');\na + 2", language="js", on_stdout=lambda m: out.append(m.line))
    assert out == ["from deno\n"] and first.text == "42"
    # State persists in the language's context; TypeScript has its own.
    assert sandbox.run_code("a * 2", language="javascript").text == "80"
    assert sandbox.run_code("const n: number = 5;\nn * 2", language="typescript").text == "10"
    assert sandbox.run_code("typeof a", language="ts").text == "undefined"
    error = sandbox.run_code("throw new TypeError('boom')", language="js").error
    assert (error.name, error.value) == ("TypeError", "boom")
    env = sandbox.run_code("console.log(Deno.env.get('FOR_JS'))", language="js", envs={"FOR_JS": "only-now"})
    assert env.logs.stdout == ["only-now\n"]
    languages = {c.language for c in sandbox.list_code_contexts()}
    assert {"javascript", "typescript"} <= languages, languages


def test_a_timed_out_execution_is_interrupted_and_the_context_goes_on(sandbox):
    sandbox.run_code("counter = 1")
    with pytest.raises(TimeoutException):
        sandbox.run_code("import time\ntime.sleep(120)\ncounter = 2", timeout=3)
    started = time.monotonic()
    assert sandbox.run_code("counter", timeout=30).text == "1"
    assert time.monotonic() - started < 30


def test_two_sandboxes_share_nothing(sandbox):
    sandbox.run_code("shared = 'first sandbox'")
    with Sandbox.create(timeout=120) as other:
        assert other.run_code("shared").error.name == "NameError"
    assert sandbox.run_code("shared").text == "first sandbox"


def test_bad_input(sandbox):
    with pytest.raises(InvalidArgumentException):
        sandbox.run_code("1", language="python", context=sandbox.create_code_context())
    with pytest.raises(Exception) as raised:
        sandbox.run_code("1", language="cobol")
    assert "cobol" in str(raised.value)
    with pytest.raises(NotFoundException):
        sandbox.remove_code_context("no-such-context")
    # A large output streams through whole.
    execution = sandbox.run_code("for i in range(100):\n    print(str(i) * 20000)")
    assert len(execution.logs.stdout) >= 1
    assert "".join(execution.logs.stdout).count("\n") == 100


def chart_of(sandbox, code):
    execution = sandbox.run_code("import matplotlib.pyplot as plt\n" + code + "\nplt.show()")
    assert execution.error is None, execution.error
    (figure,) = execution.results
    assert figure.png
    return figure.chart


def test_charts_of_every_kind(sandbox):
    line = chart_of(
        sandbox,
        "import datetime\n"
        "plt.plot([datetime.date(2026, 1, 1), datetime.date(2026, 1, 2)], [1, 3], label='temp')\n"
        "plt.title('Weather'); plt.xlabel('Day'); plt.ylabel('Temperature (C)')",
    )
    assert (line.type, line.title, line.x_label, line.y_unit) == ("line", "Weather", "Day", "C")
    assert line.x_scale == "datetime" and line.y_scale == "linear"
    assert line.elements[0].label == "temp"
    assert line.elements[0].points == [("2026-01-01T00:00:00+00:00", 1.0), ("2026-01-02T00:00:00+00:00", 3.0)]
    assert len(line.x_ticks) == len(line.x_tick_labels) > 0

    bar = chart_of(sandbox, "plt.bar(['A', 'B', 'C', 'D'], [100, 200, 300, 400], label='Books Sold')")
    assert bar.type == "bar"
    assert [(e.label, e.value, e.group) for e in bar.elements] == [
        ("A", 100.0, "Books Sold"), ("B", 200.0, "Books Sold"), ("C", 300.0, "Books Sold"), ("D", 400.0, "Books Sold")
    ]

    pie = chart_of(sandbox, "plt.pie([90, 10], labels=['yes', 'no'])")
    assert pie.type == "pie"
    assert [(e.label, e.angle, e.radius) for e in pie.elements] == [("yes", 324.0, 1.0), ("no", 36.0, 1.0)]

    scatter = chart_of(sandbox, "plt.scatter([1, 2, 3], [4, 5, 6], label='dots'); plt.yscale('log')")
    assert scatter.type == "scatter" and scatter.y_scale == "log"
    assert scatter.elements[0].points == [(1.0, 4.0), (2.0, 5.0), (3.0, 6.0)]

    box = chart_of(sandbox, "plt.boxplot([[1, 2, 3, 4, 5], [2, 4, 6, 8, 30]], tick_labels=['p', 'q'])")
    assert box.type == "box_and_whisker"
    assert [(e.label, e.min, e.median, e.max) for e in box.elements] == [("p", 1.0, 3.0, 5.0), ("q", 2.0, 6.0, 8.0)]
    assert box.elements[1].outliers == [30.0]

    both = chart_of(
        sandbox,
        "fig, (a, b) = plt.subplots(1, 2)\na.plot([1, 2])\nb.bar(['x'], [1])\nfig.suptitle('Both')",
    )
    assert both.type == "superchart" and both.title == "Both"
    assert [c.type for c in both.elements] == ["line", "bar"]

    other = chart_of(sandbox, "fig, ax = plt.subplots()\nax.add_patch(plt.Circle((0.5, 0.5), 0.2))")
    assert other.type == "unknown" and other.elements == []
