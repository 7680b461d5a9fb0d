//! Cross-service end-to-end suite; the tests live in tests/it.
