"""The report registry: each paper table's spec, by name, imported when it is rendered (so the
report command answers without loading pandas or matplotlib when there is nothing to render)."""

from __future__ import annotations

from typing import Any

from riembench.core.registry import Registry

#: table name -> its :class:`riembench.report.tables.TableSpec`
TABLES: Registry[Any] = Registry("table")

for _name, _impl in (("table1", "table1:TABLE1"), ("table2", "imagenet:TABLE2"),
                     ("table3", "imagenet:TABLE3"), ("table4", "table4:TABLE4"),
                     ("table5", "table5:TABLE5"), ("equal_bytes", "table_bytes:TABLE")):
    TABLES.declare(_name, None, f"riembench.report.{_impl}")
