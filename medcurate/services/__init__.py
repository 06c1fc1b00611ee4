"""Servers medcurate runs next to the pipeline (Label Studio), each managed from one module."""
