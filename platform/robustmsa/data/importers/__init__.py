"""Importers: the field's source formats to the one Parquet layout (`robustmsa.data.schema`).

Each importer module exposes ``import_<format>(src, out, ..., show_progress=True) ->
ImportSummary`` and writes through `robustmsa.data.parquet.write_dataset` (atomic: nothing is
left half-written). ``robustmsa data import <format> SRC --out DIR`` calls them.
"""
