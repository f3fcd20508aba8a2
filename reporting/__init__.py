"""What people read: the report's Markdown (:mod:`reporting.markdown`) and every picture (:mod:`reporting.plots`).

Text and matplotlib only: records and summaries come in, Markdown lines and
PNG files go out; nothing here trains, loads or scores a model.
"""
