# hearth: the code-interpreter-v1 template's Python kernels (IPYTHONDIR=/etc/ipython).
# Tracebacks in plain text (clients show them as text), and reprs never cut short.
c.InteractiveShell.colors = "nocolor"  # noqa: F821
c.PlainTextFormatter.max_seq_length = 0  # noqa: F821
