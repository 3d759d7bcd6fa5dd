"""The commands: riembench, riembench-report, riembench-train and the equal-bytes recipe."""
