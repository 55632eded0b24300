"""Reporting: tables, verdicts, plots, the report document and the regression gate, read from
results files. Imports the harness's readers, never a method's code.
"""
