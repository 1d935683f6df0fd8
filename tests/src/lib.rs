//! End-to-end scenarios live in tests/*.rs; see tests/README.md.
