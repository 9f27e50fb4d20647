"""The domain document, element by element: each module reads its element into the flat fields
plans compare and writes or edits it; tunables.py describes every setting once.

Importing this package imports nothing: tunables.py is pure (virtmix.util only), so the
inventory layer may use it; the element modules need lxml.
"""
