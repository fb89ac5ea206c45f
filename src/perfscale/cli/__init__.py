"""The CLI: one module per verb, each a thin wrapper over a public function."""
