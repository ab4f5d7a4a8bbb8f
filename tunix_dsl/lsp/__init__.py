"""The `.tnx` language server (`tnx lsp`): diagnostics, hover, completion, navigation, format.

Modules: `scan` (a tolerant outline of text mid-edit), `schema_info` (what the
schemas say about a place), `complete`, `hover`, `navigate`, `diagnostics`
(checker → LSP, quick fixes), `positions` (offsets ↔ LSP positions) and
`server` (pygls wiring). jax-free, like `tnx lint`.
"""
