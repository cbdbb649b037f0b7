# hearth: a pandas DataFrame displays as `e2b/data` too (the SDKs' `data`:
# column name -> list of values), beside its HTML. Loaded by every Python
# kernel of the code-interpreter-v1 template (IPYTHONDIR=/etc/ipython).


def _hearth_register_data_formatter():
    import math

    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter

    shell = get_ipython()
    if shell is None:
        return

    class DataFormatter(BaseFormatter):
        format_type = "e2b/data"
        print_method = "_repr_e2b_data_"
        _return_type = (dict,)

    def plain(value):
        """A JSON value: numpy scalars as Python ones, times as ISO text,
        NaN and infinities as null (the messages must be strict JSON)."""
        if hasattr(value, "isoformat"):
            return value.isoformat()
        if hasattr(value, "item") and not isinstance(value, (str, bytes)):
            try:
                value = value.item()
            except (TypeError, ValueError):
                return str(value)
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        return str(value)

    # A frame's data goes whole into one message: beyond this many cells it
    # is left out (the HTML, which pandas shortens, still shows the frame).
    max_cells = 200_000

    def dataframe(frame):
        if frame.size > max_cells:
            return None
        return {str(name): [plain(v) for v in column.tolist()] for name, column in frame.items()}

    # dicts and lists display as JSON too (the SDKs' `json`): numpy values as
    # numbers and lists, NaN and infinities as null, keys as text, anything
    # else as its str.
    def strict_json(value, depth=0):
        if depth > 100:
            return None
        if isinstance(value, dict):
            return {str(k): strict_json(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [strict_json(v, depth + 1) for v in value]
        if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
            try:
                return strict_json(value.tolist(), depth + 1)
            except (TypeError, ValueError):
                return str(value)
        return plain(value)

    json_formatter = shell.display_formatter.formatters["application/json"]
    json_formatter.for_type(dict, strict_json)
    json_formatter.for_type(list, strict_json)

    formatter = DataFormatter(parent=shell.display_formatter)
    # pandas 3 names the class's module `pandas`; earlier ones, its file.
    for module in ("pandas", "pandas.core.frame"):
        formatter.for_type_by_name(module, "DataFrame", dataframe)
    shell.display_formatter.formatters["e2b/data"] = formatter


_hearth_register_data_formatter()
del _hearth_register_data_formatter

# Imported once here, they are warm in the template's snapshot: a sandbox's
# first `import pandas` takes no time (the names stay out of the namespace).
try:
    import numpy as _hearth_numpy  # noqa: F401
    import pandas as _hearth_pandas  # noqa: F401

    del _hearth_numpy, _hearth_pandas
except ImportError:
    pass
