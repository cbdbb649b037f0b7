# hearth: a matplotlib Figure displays as `e2b/chart` too, the chart model
# the code-interpreter SDKs parse (line, scatter, bar, pie, superchart for
# several axes, unknown otherwise), beside its PNG. Every key of a chart is
# present, null when there is no value. Loaded by every Python kernel of the
# code-interpreter-v1 template (IPYTHONDIR=/etc/ipython).


def _hearth_register_chart_formatter():
    import math
    import re

    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter

    shell = get_ipython()
    if shell is None:
        return

    class ChartFormatter(BaseFormatter):
        """Figures go to `figure` whatever the type printers say: the
        inline backend takes every formatter's printer for figures away
        when it sets itself up (on pyplot's import, on `%matplotlib`)."""

        format_type = "e2b/chart"
        print_method = "_repr_e2b_chart_"
        _return_type = (dict,)

        def __call__(self, obj):
            kind = type(obj)
            if self.enabled and kind.__name__ == "Figure" and kind.__module__ == "matplotlib.figure":
                return figure(obj)
            return super().__call__(obj)

    def number(value):
        value = float(value)
        return value if math.isfinite(value) else None

    def text_or_none(text):
        return text or None

    def unit(label):
        found = re.search(r"\(([^)]*)\)|\[([^\]]*)\]", label or "")
        return (found.group(1) or found.group(2)) if found else None

    def is_date_axis(axis):
        import matplotlib.dates

        converter = axis.get_converter() if hasattr(axis, "get_converter") else axis.converter
        return isinstance(converter, (matplotlib.dates.DateConverter, matplotlib.dates._SwitchableDateConverter))

    def is_category_axis(axis):
        import matplotlib.category

        converter = axis.get_converter() if hasattr(axis, "get_converter") else axis.converter
        return isinstance(converter, matplotlib.category.StrCategoryConverter)

    def coordinate(axis, value):
        if is_date_axis(axis):
            import matplotlib.dates

            return matplotlib.dates.num2date(value).isoformat()
        return number(value)

    def scale(axis, name):
        if is_date_axis(axis):
            return "datetime"
        if is_category_axis(axis):
            return "categorical"
        return name if name in ("linear", "log", "symlog", "logit", "function", "functionlog", "asinh") else "unknown"

    def ticks(axis):
        values = list(axis.get_ticklocs())
        labels = axis.get_major_formatter().format_ticks(values)
        if is_category_axis(axis):
            mapping = {v: k for k, v in axis.units._mapping.items()} if axis.units else {}
            labels = [str(mapping.get(int(round(v)), label)) for v, label in zip(values, labels)]
        return [coordinate(axis, v) for v in values], [str(label) for label in labels]

    def axes_info(ax):
        x_label, y_label = text_or_none(ax.get_xlabel()), text_or_none(ax.get_ylabel())
        return {
            "x_label": x_label,
            "y_label": y_label,
            "x_unit": unit(x_label),
            "y_unit": unit(y_label),
        }

    def planar(ax, kind, elements):
        chart = {"type": kind, "title": text_or_none(ax.get_title()), "elements": elements}
        chart.update(axes_info(ax))
        x_ticks, x_tick_labels = ticks(ax.xaxis)
        y_ticks, y_tick_labels = ticks(ax.yaxis)
        chart.update(
            {
                "x_ticks": x_ticks,
                "x_tick_labels": x_tick_labels,
                "x_scale": scale(ax.xaxis, ax.get_xscale()),
                "y_ticks": y_ticks,
                "y_tick_labels": y_tick_labels,
                "y_scale": scale(ax.yaxis, ax.get_yscale()),
            }
        )
        return chart

    def label_of(artist, kind, index):
        label = artist.get_label() or ""
        return f"{kind} {index + 1}" if label.startswith("_") else label

    def is_grid_line(line):
        xs, ys = line.get_xdata(), line.get_ydata()
        return len(xs) == 2 and (xs[0] == xs[1] or ys[0] == ys[1]) and line.get_label().startswith("_")

    def line_chart(ax, lines):
        elements = []
        for i, line in enumerate(lines):
            xs, ys = line.get_xdata(orig=False), line.get_ydata(orig=False)
            points = [[coordinate(ax.xaxis, x), coordinate(ax.yaxis, y)] for x, y in zip(xs, ys)]
            elements.append({"label": label_of(line, "Line", i), "points": points})
        return planar(ax, "line", elements)

    def scatter_chart(ax, collections):
        elements = []
        for i, collection in enumerate(collections):
            points = [[coordinate(ax.xaxis, x), coordinate(ax.yaxis, y)] for x, y in collection.get_offsets()]
            elements.append({"label": label_of(collection, "Scatter", i), "points": points})
        return planar(ax, "scatter", elements)

    def bar_chart(ax, containers):
        horizontal = any(getattr(c, "orientation", "vertical") == "horizontal" for c in containers)
        along = ax.yaxis if horizontal else ax.xaxis
        positions, labels = ticks(along)
        elements = []
        for i, container in enumerate(containers):
            group = label_of(container, "Group", i)
            for bar in container.patches:
                if horizontal:
                    center, value = bar.get_y() + bar.get_height() / 2, bar.get_width()
                else:
                    center, value = bar.get_x() + bar.get_width() / 2, bar.get_height()
                label = next(
                    (lab for pos, lab in zip(positions, labels) if pos is not None and abs(pos - center) < 1e-6),
                    str(number(center)),
                )
                elements.append({"label": label, "group": group, "value": number(value)})
        chart = {"type": "bar", "title": text_or_none(ax.get_title()), "elements": elements}
        info = axes_info(ax)
        if horizontal:
            info = {
                "x_label": info["y_label"],
                "y_label": info["x_label"],
                "x_unit": info["y_unit"],
                "y_unit": info["x_unit"],
            }
        chart.update(info)
        return chart

    def pie_chart(ax, wedges):
        elements = [
            {
                "label": label_of(wedge, "Slice", i),
                "angle": number(round(abs(wedge.theta2 - wedge.theta1), 6)),
                "radius": number(wedge.r),
            }
            for i, wedge in enumerate(wedges)
        ]
        return {"type": "pie", "title": text_or_none(ax.get_title()), "elements": elements}

    def box_chart(ax, boxes):
        positions, labels = ticks(ax.yaxis if boxes[0][1] == "horizontal" else ax.xaxis)
        elements = []
        for i, (stats, _) in enumerate(boxes):
            label = stats.get("label")
            if label is None:
                label = labels[i] if i < len(labels) else str(i + 1)
            elements.append(
                {
                    "label": str(label),
                    "min": number(stats["whislo"]),
                    "first_quartile": number(stats["q1"]),
                    "median": number(stats["med"]),
                    "third_quartile": number(stats["q3"]),
                    "max": number(stats["whishi"]),
                    "outliers": [number(v) for v in stats.get("fliers", [])],
                }
            )
        chart = {"type": "box_and_whisker", "title": text_or_none(ax.get_title()), "elements": elements}
        chart.update(axes_info(ax))
        return chart

    def axes_chart(ax):
        boxes = getattr(ax, "_hearth_boxes", None)
        if boxes:
            return box_chart(ax, boxes)
        from matplotlib.collections import PathCollection
        from matplotlib.container import BarContainer
        from matplotlib.patches import Wedge

        lines = [line for line in ax.lines if not is_grid_line(line)]
        patches, collections = list(ax.patches), list(ax.collections)
        bars = [c for c in ax.containers if isinstance(c, BarContainer)]
        if bars and not lines and not collections:
            return bar_chart(ax, bars)
        if patches and all(isinstance(p, Wedge) for p in patches) and not lines and not collections:
            return pie_chart(ax, patches)
        if collections and all(isinstance(c, PathCollection) for c in collections) and not lines and not patches:
            return scatter_chart(ax, collections)
        if lines and not patches and not collections:
            return line_chart(ax, lines)
        return {"type": "unknown", "title": text_or_none(ax.get_title()), "elements": []}

    def figure(fig):
        try:
            used = [ax for ax in fig.axes if ax.has_data()]
            if not used:
                return {}
            if len(used) == 1:
                return axes_chart(used[0])
            title = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) else None
            return {"type": "superchart", "title": text_or_none(title), "elements": [axes_chart(ax) for ax in used]}
        except Exception:  # a chart that cannot be read is still shown as an image
            return {}

    # A box plot's statistics are gone once drawn (boxes, whiskers and
    # medians are plain lines): keep them on the axes as they are drawn.
    # Importing matplotlib here also makes it warm in the template's snapshot.
    import matplotlib.axes

    drawn = matplotlib.axes.Axes.bxp

    def bxp(self, bxpstats, *args, **kwargs):
        artists = drawn(self, bxpstats, *args, **kwargs)
        horizontal = kwargs.get("vert") is False or kwargs.get("orientation") == "horizontal"
        orientation = "horizontal" if horizontal else "vertical"
        self._hearth_boxes = getattr(self, "_hearth_boxes", []) + [(dict(s), orientation) for s in bxpstats]
        return artists

    matplotlib.axes.Axes.bxp = bxp

    shell.display_formatter.formatters["e2b/chart"] = ChartFormatter(parent=shell.display_formatter)
    # Warm in the template's snapshot.
    import matplotlib.pyplot  # noqa: F401


_hearth_register_chart_formatter()
del _hearth_register_chart_formatter
